"""Executes notebooks/batch_normalization.ipynb top to bottom and stores its outputs in it.

    pip install -e ".[docs]"
    python notebooks/run_notebook.py            # about two minutes on 2 CPU cores

The notebook reads the real CIFAR-10 where a prepared copy is found (TFDS_DATA_DIR, or
../shared/datasets/tensorflow_datasets beside the repository), else synthetic images.
tests/test_notebook.py executes a copy the same way (`execute`) and checks it.
"""

from __future__ import annotations

import os
import re
import sys
import time

NOTEBOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "batch_normalization.ipynb")


def execute(path: str, output: str, timeout: int = 600) -> float:
    """Runs the notebook at `path` in a fresh kernel, in its own directory; writes it with
    its outputs to `output`; returns the seconds it took."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}}
                   ).execute()
    seconds = time.perf_counter() - start
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in map(_without_runtime_logs, cell.outputs) if o is not None]
    nbformat.write(notebook, output)
    return seconds


# TensorFlow's C++ log lines. The notebook's first cell hides them
# (bn_keras.cli.quiet_tensorflow), but a kernel that inherits a lower TF_CPP_MIN_LOG_LEVEL
# (tests/conftest.py sets 2) still shows errors such as "failed call to cuInit": the
# stored copy keeps none.
_RUNTIME_LOG = re.compile(r"^([IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]|WARNING: All log "
                          r"messages before absl::InitializeLog\(\))")


def _without_runtime_logs(output):
    """An output without TensorFlow's runtime log lines on stderr (None if nothing is left)."""
    if output.get("output_type") != "stream" or output.get("name") != "stderr":
        return output
    kept = [line for line in output["text"].splitlines(keepends=True)
            if not _RUNTIME_LOG.match(line)]
    if not "".join(kept).strip():
        return None
    output["text"] = "".join(kept)
    return output


if __name__ == "__main__":
    try:
        took = execute(NOTEBOOK, NOTEBOOK)
    except ImportError as e:
        sys.exit(f"error: {e.name} is missing: pip install -e \".[docs]\"")
    print(f"executed {NOTEBOOK} in {took:.0f} s")
