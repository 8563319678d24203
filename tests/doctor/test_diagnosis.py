"""bn_keras.doctor.diagnosis with data: moving statistics against re-estimated ones, the
data guard, repair, the report's JSON; on a hand-built classifier, no training.

The classifier: x (2 features) -> Dense (identity) -> BN -> logits [-z, z] of the first
normalized feature. The classes sit at 9 and 11 on that feature, so with the statistics
of the data (mean 10) it separates them (about 84%), with the initial ones (mean 0) it
calls everything class 1 (50%).
"""

import json

import keras
import numpy as np
import pytest

import bn_keras
from bn_keras.doctor import Diagnosis, thresholds
from bn_keras.doctor.measurement import take_batches
from bn_keras.errors import InvalidSetting
from bn_keras.layers import BatchNormalization


def classifier(bn=BatchNormalization, mean=(10.0, 0.0), variance=(2.0, 1.0)):
    inputs = keras.Input((2,))
    h = keras.layers.Dense(2, use_bias=False, name="dense")(inputs)
    h = bn(name="bn")(h)
    logits = keras.layers.Dense(2, use_bias=False, name="logits")(h)
    model = keras.Model(inputs, logits, name="classifier")
    model.get_layer("dense").set_weights([np.eye(2, dtype=np.float32)])
    model.get_layer("logits").set_weights([np.array([[-1, 1], [0, 0]], np.float32)])
    bn_layer = model.get_layer("bn")
    bn_layer.set_weights([np.array([1.2, 1.0], np.float32), np.zeros(2, np.float32),
                          np.array(mean, np.float32), np.array(variance, np.float32)])
    return model


def data(n=2000, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = np.stack([10 + 2 * y - 1 + rng.normal(size=n), rng.normal(size=n)], 1)
    return (x * scale).astype(np.float32), y


def _variables(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in model.variables]


def test_right_statistics_no_finding_and_the_model_unchanged():
    model = classifier()
    before = _variables(model)
    diagnosis = bn_keras.diagnose_batch_norm(model, data(), calibration_data=data(seed=1))
    assert diagnosis.healthy and diagnosis.find("stale_statistics") is None
    m = diagnosis.measurement
    assert m.moving.accuracy == pytest.approx(m.re_estimated.accuracy, abs=0.01)
    assert m.moving.accuracy > 0.8 and m.moving.examples == 2000
    for a, b in zip(before, _variables(model), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bn", [keras.layers.BatchNormalization, BatchNormalization])
def test_stale_statistics_found_with_their_cost_and_layer(bn):
    model = classifier(bn, mean=(7.0, 0.0))  # three standard deviations off
    diagnosis = bn_keras.diagnose_batch_norm(model, data(), calibration_data=data(seed=1))
    finding = diagnosis.find("stale_statistics")
    assert finding.severity == "error" and finding.layers == ("bn",) and finding.fixable
    gain = diagnosis.measurement.accuracy_gain
    assert gain > thresholds.COST_ERROR and finding.numbers["gain"] == gain
    assert finding.cost == f"{gain * 100:.1f} points of accuracy"
    layer = diagnosis.measurement.layers[0]
    assert layer.layer == "bn" and layer.error > 1.0


def test_data_preprocessed_otherwise_is_a_data_mismatch_not_stale_statistics():
    model = classifier()
    diagnosis = bn_keras.diagnose_batch_norm(model, data(scale=255.0),
                                             calibration_data=data(seed=1, scale=255.0))
    assert diagnosis.find("stale_statistics") is None
    assert diagnosis.find("data_mismatch").layers == ("bn",)
    assert "data_mismatch" in diagnosis.skipped["stale_statistics"]


def test_without_data_the_data_checks_are_named_as_skipped():
    skipped = bn_keras.diagnose_batch_norm(classifier()).skipped
    assert {"stale_statistics", "batch_dependence", "data_mismatch"} <= set(skipped)


def test_statistics_never_updated_and_re_estimation_that_breaks_the_weights():
    """Weights trained with BN in inference mode (initial statistics): re-estimating them
    breaks the model, so the fix is in the training loop, not --fix."""
    model = classifier(mean=(0.0, 0.0), variance=(1.0, 1.0))
    model.get_layer("bn").beta.assign(np.array([-10.0 * 1.2 / np.sqrt(1.001), 0], np.float32))
    diagnosis = bn_keras.diagnose_batch_norm(model, data(), calibration_data=data(seed=1))
    finding = diagnosis.find("statistics_never_updated")
    assert finding.layers == ("bn",) and not finding.fixable
    assert "does not help" in finding.evidence and "train again" in finding.fix
    repair = bn_keras.repair_batch_norm(model, data(), data(seed=1))
    assert not repair.applied and repair.after == repair.before


def test_repair_re_estimates_and_the_diagnosis_is_then_healthy():
    model = classifier(mean=(7.0, 0.0))
    repair = bn_keras.repair_batch_norm(model, data(), data(seed=1))
    assert repair.applied and repair.after.accuracy > repair.before.accuracy + 0.2
    assert repair.calibration_examples == 2000
    assert model.get_layer("bn").moving_mean.numpy()[0] == pytest.approx(10, abs=0.1)
    assert bn_keras.diagnose_batch_norm(model, data()).healthy


def test_take_batches_reads_every_form_of_data():
    x, y = data(300)
    assert [len(b[0]) for b in take_batches((x, y), 10, 128)] == [128, 128, 44]
    assert [len(b[0]) for b in take_batches((x, y), 2, 128)] == [128, 128]
    assert take_batches(x, 10, 100)[0][1] is None
    listed = take_batches([(x[:5], y[:5]), (x[5:9], y[5:9])], 10, 0)
    assert [len(b[1]) for b in listed] == [5, 4]


def test_the_report_round_trips_through_json():
    diagnosis = bn_keras.diagnose_batch_norm(classifier(mean=(7.0, 0.0)), data(),
                                             batch_size=2)
    text = json.dumps(diagnosis.to_json())
    again = Diagnosis.from_json(json.loads(text))
    assert again == diagnosis
    assert json.loads(text)["healthy"] is False and json.loads(text)["summary"]


def test_statistics_mostly_initial_but_costing_nothing_are_info_with_data():
    model = classifier(bn=lambda name: keras.layers.BatchNormalization(momentum=0.999,
                                                                       name=name))
    model.compile("sgd", "mse")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(100)  # 0.999^100 = 0.905 initial, but they are right
    assert bn_keras.diagnose_batch_norm(model).find("initial_statistics").severity == "warning"
    finding = bn_keras.diagnose_batch_norm(model, data()).find("initial_statistics")
    assert finding.severity == "info" and "measured no cost" in finding.evidence


def test_data_that_does_not_fit_the_model_is_one_line():
    with pytest.raises(InvalidSetting, match="`data` does not fit the model"):
        bn_keras.diagnose_batch_norm(classifier(), (np.zeros((8, 3), np.float32), np.zeros(8)))
