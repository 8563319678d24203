"""notebooks/batch_normalization.ipynb: a copy executed top to bottom in a fresh kernel,
and what it shows checked (the stored notebook is never rewritten here)."""

import os
import re
import shutil
import sys

import pytest
from extras import needs_extra

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "notebooks"))

needs_docs = needs_extra("docs", "nbclient", "nbformat", "ipykernel")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    import nbformat
    import run_notebook

    tmp = tmp_path_factory.mktemp("notebook")
    copy = tmp / "batch_normalization.ipynb"
    shutil.copy(run_notebook.NOTEBOOK, copy)
    run_notebook.execute(str(copy), str(tmp / "executed.ipynb"))
    notebook = nbformat.read(tmp / "executed.ipynb", as_version=4)
    text = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
    return "\n".join(text)


def _number(text, pattern):
    return float(re.search(pattern + r"\s*=?\s*([-+0-9.e]+)", text).group(1))


@pytest.mark.slow
@needs_docs
def test_formulas_equal_both_layers(executed):
    assert _number(executed, r"max \|ours - NumPy\|") < 1e-5
    assert _number(executed, r"max \|Keras' - NumPy\|") < 1e-5
    assert _number(executed, r"inference, max \|ours - formula\|") < 1e-5


@pytest.mark.slow
@needs_docs
def test_the_tutorials_network_is_the_no_bn_network(executed):
    assert "as written: 62006  bn1 built: False" in executed
    assert "no BN:      62006" in executed
    assert _number(executed, r"training=True: max \|as written - no BN\|") == 0.0


@pytest.mark.slow
@needs_docs
def test_folding_keeps_the_outputs(executed):
    assert "BN layers before: 4  after: 0" in executed
    assert _number(executed, r"max \|folded - unfolded\| logit:") < 1e-4


@pytest.mark.slow
@needs_docs
def test_bn_study_and_tools_sections_ran(executed):
    assert re.search(r"bn=custom\s+test accuracy per epoch \[", executed)
    assert re.search(r"re-estimated \(\d+ images\): test accuracy 0\.\d+", executed)


def _report_cells():
    """The notebook's cells tagged "reports" (they show committed results), as stored."""
    import json

    with open(os.path.join(REPO, "notebooks", "batch_normalization.ipynb")) as f:
        notebook = json.load(f)
    return [cell for cell in notebook["cells"]
            if "reports" in cell.get("metadata", {}).get("tags", [])]


def _shown(cell):
    """What the cell shows from the committed reports today: its code run with IPython's
    display stubbed, each Markdown it displays."""
    import pathlib
    import types

    shown = []
    display_module = types.ModuleType("IPython.display")
    display_module.Markdown = lambda text: ("markdown", text)
    display_module.Image = lambda **kwargs: ("image", kwargs.get("filename"))
    display_module.display = lambda *items: shown.extend(
        text for kind, text in items if kind == "markdown")
    namespace = {"ROOT": pathlib.Path(REPO),
                 "results_dir": pathlib.Path(REPO) / "experiments" / "results"}
    saved = {name: sys.modules.get(name) for name in ("IPython", "IPython.display")}
    sys.modules["IPython"] = types.ModuleType("IPython")
    sys.modules["IPython.display"] = display_module
    try:
        exec("".join(cell["source"]), namespace)  # noqa: S102 - the repository's own notebook
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return shown


def test_the_stored_notebook_shows_what_the_reports_hold():
    """Cells that show committed results read them from the reports when executed; their
    stored outputs must be what they read today (a stored table once contradicted the
    committed study_compare.csv)."""
    cells = _report_cells()
    assert len(cells) >= 2
    for cell in cells:
        stored = ["".join(output["data"]["text/markdown"]) for output in cell["outputs"]
                  if "text/markdown" in output.get("data", {})]
        assert stored == _shown(cell), "".join(cell["source"])[:200]


@pytest.mark.slow
@needs_docs
def test_the_doctor_finds_the_tutorials_mistake_in_one_line(executed):
    line = next(line for line in executed.splitlines() if line.startswith("lenet_tutorial: "))
    assert "error: bn1, bn2: never called by the forward pass" in line
