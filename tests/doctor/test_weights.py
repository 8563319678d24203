"""bn_keras.doctor.weights: what BN layers hold (statistics never updated, mostly initial,
non-finite, negative; collapsed channels; gamma near zero) and the batch they were
trained at; from weights set by hand, no training."""

import keras
import numpy as np
import pytest

import bn_keras
from bn_keras import models
from bn_keras.doctor import thresholds


def _model(bn="keras", **options):
    return models.lenet_cifar(bn, **options)


def _set(layer, **values):
    for name, value in values.items():
        variable = getattr(layer, name)
        variable.assign(np.broadcast_to(np.asarray(value, np.float32), variable.shape))


def test_statistics_never_updated_while_gamma_and_beta_trained():
    model = _model()
    for layer in bn_keras.layers.batch_norm_layers(model)[:2]:
        _set(layer, gamma=1.3, beta=0.2, moving_mean=0.5, moving_variance=2.0)
    # the last two: gamma moved, statistics untouched, as after a loop without training=True
    for layer in bn_keras.layers.batch_norm_layers(model)[2:]:
        _set(layer, gamma=0.8)
    finding = bn_keras.diagnose_batch_norm(model).find("statistics_never_updated")
    assert finding.layers == ("fc1_bn", "fc2_bn") and finding.severity == "error"
    assert "training=True" in finding.fix


def test_an_untrained_model_is_not_blamed():
    diagnosis = bn_keras.diagnose_batch_norm(_model())
    assert [f.check for f in diagnosis.findings] == ["untrained"] and diagnosis.healthy


def test_statistics_mostly_initial_counted_from_the_optimizers_steps():
    model = _model(momentum=0.999)
    model.compile(keras.optimizers.Adam(), "mse")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(100)
    for layer in bn_keras.layers.batch_norm_layers(model):
        _set(layer, moving_mean=0.1, moving_variance=1.2, gamma=1.1)
    diagnosis = bn_keras.diagnose_batch_norm(model)
    finding = diagnosis.find("initial_statistics")
    assert finding.severity == "warning" and len(finding.layers) == 4
    assert finding.numbers["initial_weight"] == pytest.approx(0.999 ** 100)
    assert diagnosis.updates == 100 and diagnosis.updates_source == "the optimizer's iterations"
    # after enough steps, nothing; without a count, the check is named as skipped
    assert bn_keras.diagnose_batch_norm(model, updates=5000).find("initial_statistics") is None
    assert "initial_statistics" in bn_keras.diagnose_batch_norm(_trained()).skipped


def _trained():
    model = _model()
    for layer in bn_keras.layers.batch_norm_layers(model):
        _set(layer, gamma=1.1, moving_mean=0.1, moving_variance=1.5)
    return model


def test_non_finite_and_negative_statistics_and_weights():
    model = _trained()
    conv1, conv2, fc1, fc2 = bn_keras.layers.batch_norm_layers(model)
    conv1.moving_variance.assign(np.array([np.nan, 1, 1, 1, 1, np.inf], np.float32))
    conv2.moving_variance.assign(np.full(16, -0.5, np.float32))
    fc1.gamma.assign(np.full(120, np.nan, np.float32))
    checks = {f.check: f for f in bn_keras.diagnose_batch_norm(model).findings}
    assert checks["non_finite_statistics"].layers == ("conv1_bn",)
    assert checks["non_finite_statistics"].numbers == {"conv1_bn": {"mean": 0, "variance": 2}}
    assert checks["non_finite_statistics"].fixable
    assert checks["negative_variance"].layers == ("conv2_bn",)
    assert checks["non_finite_weights"].layers == ("fc1_bn",)
    assert not checks["non_finite_weights"].fixable


def test_collapsed_channels_and_gamma_near_zero():
    model = _trained()
    conv1, conv2, fc1, fc2 = bn_keras.layers.batch_norm_layers(model)
    conv1.moving_variance.assign(np.array([0, 1e-7, 1, 1, 1, 1], np.float32))  # 2 of 6
    conv2.moving_variance.assign(np.r_[np.zeros(10), np.ones(6)].astype(np.float32))  # 10 of 16
    fc1.gamma.assign(np.r_[np.zeros(3), np.ones(117)].astype(np.float32))
    fc2.gamma.assign(np.zeros(84, np.float32))
    found = [(f.check, f.layers, str(f.severity))
             for f in bn_keras.diagnose_batch_norm(model).findings]
    assert ("collapsed_channels", ("conv1_bn",), "info") in found
    assert ("collapsed_channels", ("conv2_bn",), "warning") in found
    assert ("gamma_near_zero", ("fc1_bn",), "info") in found
    assert ("gamma_near_zero", ("fc2_bn",), "warning") in found


@pytest.mark.parametrize("batch_size, replicas, options, severity", [
    (2, 1, {}, "error"),
    (4, 1, {}, "warning"),
    (8, 1, {}, None),
    (2, 4, {"synchronized": True}, None),   # the global batch of 8
    (2, 4, {}, "error"),                     # each replica's own 2
    (64, 1, {"virtual_batch_size": 2}, "error"),  # ghost groups of 2
])
def test_small_batches_per_bn_group(batch_size, replicas, options, severity):
    bn = "custom" if "virtual_batch_size" in options else "keras"
    model = models.lenet_cifar(bn, **options)
    for layer in bn_keras.layers.batch_norm_layers(model):
        _set(layer, gamma=1.1, moving_mean=0.1, moving_variance=1.5)
    diagnosis = bn_keras.diagnose_batch_norm(model, batch_size=batch_size, replicas=replicas)
    finding = diagnosis.find("small_batch")
    assert (finding and str(finding.severity)) == severity
    if finding:
        assert thresholds.BATCH_STUDY in finding.evidence and "0.1797" in finding.evidence
        assert thresholds.NORM_BATCH_STUDY in finding.evidence and "0.3542" in finding.evidence
    assert "small_batch" in bn_keras.diagnose_batch_norm(model).skipped
