"""bn_keras.layers.freezing: BN in inference mode with its weights fixed, for fine-tuning."""

import keras
import numpy as np

from bn_keras import models
from bn_keras.layers import batch_norm_layers, freeze_batch_norm
from bn_keras.testing import bn_tools


def test_fit_leaves_every_bn_weight_and_statistic_unchanged():
    model = bn_tools.tools_model()
    model.get_layer("frozen_bn").trainable = True  # freeze_batch_norm freezes it again
    names = freeze_batch_norm(model)
    assert set(names) == {layer.name for layer in batch_norm_layers(model)} and len(names) == 7
    before = {w.path: w.numpy().copy() for layer in batch_norm_layers(model)
              for w in layer.weights}
    conv_before = model.get_layer("conv").kernel.numpy().copy()
    data = bn_tools.batches(1, 16)[0]
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    model.fit(data, np.ones((16, 6)), batch_size=8, epochs=2, verbose=0)
    for layer in batch_norm_layers(model):
        for w in layer.weights:
            np.testing.assert_array_equal(w.numpy(), before[w.path], err_msg=w.path)
    assert np.abs(model.get_layer("conv").kernel.numpy() - conv_before).max() > 0  # trained


def test_frozen_bn_normalizes_with_its_moving_statistics_in_training():
    model = models.lenet_cifar("custom")
    bn_tools.randomize_batch_norm(model)
    freeze_batch_norm(model)
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(model(x, training=True).numpy(),
                               model(x, training=False).numpy(), atol=1e-6)


def test_freezing_a_compiled_model_warns_to_compile_again():
    import pytest

    model = models.lenet_cifar("custom")
    model.compile("adam", "mse")
    with pytest.warns(UserWarning, match="compile it again before training"):
        freeze_batch_norm(model)
    fresh = models.lenet_cifar("custom")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        freeze_batch_norm(fresh)  # not compiled yet: the intended order, no warning


def test_a_string_is_refused_in_one_line():
    import pytest

    with pytest.raises(TypeError, match="expected a Keras model .*got str 'x'"):
        freeze_batch_norm("x")
