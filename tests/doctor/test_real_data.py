"""The doctor's data guard on real CIFAR-10: the right preprocessing measures the
statistics, raw pixels are called a data mismatch and never "stale statistics"."""

import keras
import pytest

import bn_keras
from bn_keras.testing import doctor_cases
from bn_keras.train import checkup

pytestmark = [pytest.mark.slow, pytest.mark.real_data]


def test_wrong_preprocessing_is_a_data_mismatch_not_stale_statistics(cifar10_dir):
    right = checkup.images_data("cifar10", cifar10_dir, "cifar_normalized", 64,
                                calibration_examples=3840, evaluation_examples=1000)
    keras.utils.set_random_seed(0)
    # momentum 0.9: 120 steps leave the statistics trained (0.9^120 of the initial ones)
    model = doctor_cases.network("lenet", "keras", momentum=0.9)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(right.calibration.repeat(2), verbose=0, shuffle=False)
    measured = bn_keras.diagnose_batch_norm(model, right.evaluation,
                                            calibration_data=right.calibration, batch_size=64,
                                            max_batches=60)
    assert measured.find("data_mismatch") is None and "stale_statistics" not in measured.skipped
    first = measured.measurement.layers[0]
    assert 0.5 < first.variance_ratio < 2 and first.mean_shift < 0.5
    raw = checkup.images_data("cifar10", cifar10_dir, "none", 64, calibration_examples=640,
                              evaluation_examples=1000)
    wrong = bn_keras.diagnose_batch_norm(model, raw.evaluation, calibration_data=raw.calibration,
                                         batch_size=64)
    assert wrong.find("data_mismatch").layers == ("conv1_bn",)
    assert wrong.find("stale_statistics") is None
    assert wrong.measurement.layers[0].variance_ratio > 100
