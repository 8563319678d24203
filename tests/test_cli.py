"""bn_keras.cli: --verbosity read before TensorFlow starts, and the scripts' common shape."""

import os
import subprocess
import sys

import pytest

from bn_keras import cli


@pytest.mark.parametrize("argv,expected", [
    ([], None), (["--verbosity=0"], 0), (["--verbosity", "1"], 1), (["-v", "2"], 2),
    (["-v=-1"], -1), (["--verbosity=x"], None), (["--epochs=3"], None),
])
def test_verbosity_is_read_from_argv(argv, expected):
    assert cli.verbosity(["script.py", *argv]) == expected


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train", "compare_bn", "tune", "export", "predict",
                                    "validate_bn", "verify_export", "launch_local_workers",
                                    "tensorboard_screenshots"])
def test_every_script_has_help(run_script, script):
    proc = run_script(script, "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--" in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.parametrize("backend,imported", [("jax", False), ("torch", False),
                                              ("tensorflow", True)])
@pytest.mark.slow
def test_tensorflow_is_imported_only_for_the_tensorflow_backend(backend, imported):
    # On the GPU machine there is no TensorFlow, and torch with TensorFlow in one
    # process can crash: scripts that run on any backend must not import it there.
    code = ("import sys; from bn_keras import cli; cli.quiet_tensorflow([]); "
            "print('tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "KERAS_BACKEND": backend}, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(imported)
