"""bn_keras.train.optimizers: the learning-rate schedules and weight decay."""

import numpy as np
import pytest

from bn_keras import models
from bn_keras.train import optimizers
from bn_keras.train.config import TrainConfig


def test_learning_rate_schedules():
    cosine = optimizers.learning_rate(TrainConfig(lr_schedule="cosine", learning_rate=0.1,
                                                  epochs=2), 10)
    assert float(cosine(0)) == pytest.approx(0.1) and float(cosine(20)) == pytest.approx(0.0)
    warm = optimizers.learning_rate(TrainConfig(lr_schedule="warmup_cosine", learning_rate=0.1,
                                          warmup_epochs=1, epochs=3), 10)
    assert float(warm(0)) == pytest.approx(0.0)
    assert float(warm(10)) == pytest.approx(0.1)
    assert float(warm(30)) == pytest.approx(0.0, abs=1e-6)




def test_weight_decay_shrinks_kernels_and_spares_bn_and_biases():
    """Decoupled decay: with a zero gradient, an SGD step multiplies every conv and dense
    kernel by (1 - lr * wd) and leaves gamma, beta and biases alone."""
    config = TrainConfig(weight_decay=0.1, optimizer="sgd", learning_rate=0.5, sgd_momentum=0.0)
    model = models.build_model("lenet", "custom", placement="after_relu")  # biases too
    optimizer = optimizers.make_optimizer(config, steps_per_epoch=10)
    before = {v.path: np.array(v) for v in model.trainable_variables}
    optimizer.apply_gradients([(np.zeros(v.shape, np.float32), v)
                               for v in model.trainable_variables])
    for variable in model.trainable_variables:
        factor = 1 - 0.5 * 0.1 if variable.name == "kernel" else 1.0
        np.testing.assert_allclose(np.array(variable), before[variable.path] * factor,
                                   rtol=1e-6, err_msg=variable.path)
    assert {v.name for v in model.trainable_variables} == {"kernel", "bias", "gamma", "beta"}
