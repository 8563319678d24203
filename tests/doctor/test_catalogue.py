"""The doctor on its catalogue (bn_keras.testing.doctor_cases): every broken model found
with the right layer, no error on a healthy one, --fix repairing what it can.

The models are the fixtures of tests/fixtures/doctor/ (the tiny network trained on
synthetic images by tests/fixtures/make_doctor_fixtures.py), diagnosed on fresh synthetic
images; the tutorial's network is built here (its mistake needs no training). The same
catalogue trained on real CIFAR-10 is experiments/results/bn_doctor.md.
"""

import os

import pytest

import bn_keras
from bn_keras import models
from bn_keras.testing import doctor_cases

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "doctor")
pytestmark = pytest.mark.slow  # loads and measures 12 models


def load(name):
    if name == "tutorial_as_written":
        return models.lenet_tutorial()
    return bn_keras.load_model(os.path.join(FIXTURES, f"{name}.keras"))


def diagnose(case):
    """The doctor on a case, with the fixtures' data (the tutorial's network, built for
    CIFAR's 32x32 images, without: its mistake shows without data)."""
    if case.name == "tutorial_as_written":
        return bn_keras.diagnose_batch_norm(load(case.name), batch_size=case.batch_size)
    evaluation, calibration = doctor_cases.fixture_data()
    return bn_keras.diagnose_batch_norm(load(case.name), evaluation,
                                        calibration_data=calibration, batch_size=case.batch_size)


@pytest.fixture(scope="module")
def diagnoses():
    return {case.name: diagnose(case) for case in doctor_cases.CASES}


@pytest.mark.parametrize("case", doctor_cases.CASES, ids=lambda case: case.name)
def test_every_case_is_diagnosed_right(case, diagnoses):
    diagnosis = diagnoses[case.name]
    assert doctor_cases.missed(case, diagnosis) == [], diagnosis.summary()
    assert diagnosis.healthy == case.healthy, [f.line() for f in diagnosis.findings]


def test_the_fixtures_are_small():
    sizes = {name: os.path.getsize(os.path.join(FIXTURES, name)) for name in os.listdir(FIXTURES)}
    assert len(sizes) == len(doctor_cases.CASES) - 1 and sum(sizes.values()) < 300_000, sizes


@pytest.mark.parametrize("case", [c for c in doctor_cases.CASES if c.fixable],
                         ids=lambda case: case.name)
def test_fix_repairs_what_needs_no_code_change(case):
    evaluation, calibration = doctor_cases.fixture_data()
    model = load(case.name)
    repair = bn_keras.repair_batch_norm(model, evaluation, calibration)
    assert repair.applied and repair.after.accuracy > repair.before.accuracy + 0.05, repair
    after = bn_keras.diagnose_batch_norm(model, evaluation, calibration_data=calibration)
    assert after.find("stale_statistics") is None
    assert after.find("non_finite_statistics") is None


def test_fix_leaves_alone_what_needs_a_code_change():
    """BN that ran in inference mode during training: re-estimated statistics score worse,
    so the repair keeps the moving ones."""
    evaluation, calibration = doctor_cases.fixture_data()
    repair = bn_keras.repair_batch_norm(load("no_training_flag"), evaluation, calibration)
    assert not repair.applied and repair.after == repair.before
