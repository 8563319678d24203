"""Runs the BN doctor on one Keras backend and reports what it found, as JSON.

tests/doctor/test_other_backends.py starts it in a fresh process per backend with
KERAS_BACKEND set (Keras picks its backend at import) and compares the report with what
the doctor finds on TensorFlow. TensorFlow is made unimportable first, as on a machine
without it: the doctor must not need it on JAX or PyTorch.

    KERAS_BACKEND=jax python tests/doctor/doctor_probe.py FIXTURES_DIR REPORT.json
"""

import json
import os
import sys

sys.modules["tensorflow"] = None  # any import of TensorFlow now fails

import keras  # noqa: E402

import bn_keras  # noqa: E402
from bn_keras import models  # noqa: E402
from bn_keras.testing import doctor_cases  # noqa: E402


def found(diagnosis):
    return {"healthy": diagnosis.healthy, "summary": diagnosis.summary(),
            "findings": [[f.check, list(f.layers), str(f.severity)] for f in diagnosis.findings],
            "accuracy": None if diagnosis.measurement is None else
            [diagnosis.measurement.moving.accuracy, diagnosis.measurement.re_estimated.accuracy]}


def main(fixtures, report_path):
    evaluation, calibration = doctor_cases.fixture_data()
    report = {"backend": keras.config.backend(), "cases": {}}
    for case in doctor_cases.CASES:
        data = {"data": evaluation, "calibration_data": calibration}
        if case.name == "tutorial_as_written":  # built for 32x32 images: no data
            model, data = models.lenet_tutorial(), {}
        else:
            model = bn_keras.load_model(os.path.join(fixtures, f"{case.name}.keras"))
        try:
            diagnosis = bn_keras.diagnose_batch_norm(model, batch_size=case.batch_size, **data)
        except Exception as e:  # noqa: BLE001 - reported, for the test to name
            report["cases"][case.name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        report["cases"][case.name] = {**found(diagnosis),
                                      "missed": doctor_cases.missed(case, diagnosis)}
        if case.name == "large_learning_rate":
            repair = bn_keras.repair_batch_norm(model, evaluation, calibration)
            report["repair"] = [repair.applied, repair.before.accuracy, repair.after.accuracy]
    channels_first = doctor_cases.network("tiny", "custom", channels_first=True)
    report["channels_first_custom"] = found(bn_keras.diagnose_batch_norm(channels_first))
    with open(report_path, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
