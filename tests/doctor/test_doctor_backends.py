"""The BN doctor on JAX and PyTorch: the same findings as on TensorFlow.

Keras picks its backend when it is imported, so each backend runs in its own process
(tests/doctor/doctor_probe.py, TensorFlow made unimportable), on the catalogue's
fixtures (tests/fixtures/doctor/, saved on TensorFlow) and the tutorial's network, and the
tests compare its report with the doctor's findings here, on TensorFlow. They skip where
the backend is not installed: `pip install -e ".[test,backends]"`.
"""

import json
import os

import pytest
from extras import needs_extra

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "doctor")
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


@pytest.fixture(scope="module")
def reports(tmp_path_factory, scripts):
    """Each installed backend's report, one process after the other (PyTorch's threads
    collapse when another process takes a core)."""
    import importlib.util

    tmp = tmp_path_factory.mktemp("doctor_backends")
    found = {}
    for backend in ("jax", "torch"):
        if importlib.util.find_spec(backend) is None:
            continue
        proc = scripts.run("tests/doctor/doctor_probe", FIXTURES, str(tmp / f"{backend}.json"),
                           env={"KERAS_BACKEND": backend}, timeout=600)
        assert proc.returncode == 0, proc.stderr[-5000:]
        found[backend] = json.loads((tmp / f"{backend}.json").read_text())
    return found


@pytest.fixture(scope="module")
def on_tensorflow():
    """What the probe reports, found here on TensorFlow."""
    import bn_keras
    from bn_keras import models
    from bn_keras.testing import doctor_cases

    evaluation, calibration = doctor_cases.fixture_data()
    found = {}
    for case in doctor_cases.CASES:
        data = {"data": evaluation, "calibration_data": calibration}
        if case.name == "tutorial_as_written":  # built for 32x32 images: no data
            model, data = models.lenet_tutorial(), {}
        else:
            model = bn_keras.load_model(os.path.join(FIXTURES, f"{case.name}.keras"))
        diagnosis = bn_keras.diagnose_batch_norm(model, batch_size=case.batch_size, **data)
        found[case.name] = {
            "healthy": diagnosis.healthy, "findings": [[f.check, list(f.layers)]
                                                       for f in diagnosis.findings],
            "accuracy": None if diagnosis.measurement is None else
            [diagnosis.measurement.moving.accuracy, diagnosis.measurement.re_estimated.accuracy]}
    return found


def check_catalogue(report, on_tensorflow):
    for name, expected in on_tensorflow.items():
        got = report["cases"][name]
        assert "error" not in got, (name, got)
        assert got["missed"] == [], (name, got["summary"])
        assert got["healthy"] == expected["healthy"], (name, got["summary"])
        assert {(f[0], tuple(f[1])) for f in got["findings"] if f[0] != "batch_dependence"} == {
            (f[0], tuple(f[1])) for f in expected["findings"] if f[0] != "batch_dependence"}, name
        if expected["accuracy"] is not None:
            assert got["accuracy"] == pytest.approx(expected["accuracy"], abs=0.02), name


def check_repair_and_axis(report):
    applied, before, after = report["repair"]
    assert applied and after > before + 0.05
    findings = report["channels_first_custom"]["findings"]
    assert [f[:2] for f in findings if f[0] == "axis_mismatch"] == [
        ["axis_mismatch", ["conv1_bn"]], ["axis_mismatch", ["conv2_bn"]]]


@needs_extra("backends", "jax")
def test_jax_diagnoses_the_catalogue_as_tensorflow(reports, on_tensorflow):
    assert reports["jax"]["backend"] == "jax"
    check_catalogue(reports["jax"], on_tensorflow)
    check_repair_and_axis(reports["jax"])


@needs_extra("backends", "torch")
def test_torch_diagnoses_the_catalogue_as_tensorflow(reports, on_tensorflow):
    assert reports["torch"]["backend"] == "torch"
    check_catalogue(reports["torch"], on_tensorflow)
    check_repair_and_axis(reports["torch"])
