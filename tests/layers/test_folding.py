"""bn_keras.layers.folding: inference-mode BN folded into the layer before it."""

import keras
import numpy as np
import pytest

from bn_keras import models
from bn_keras.data import sources
from bn_keras.layers import (
    BatchNormalization,
    FoldReport,
    batch_norm_layers,
    fold_batch_norm,
    fold_report,
    foldable_pairs,
)
from bn_keras.serve import export
from bn_keras.testing import bn_tools


@pytest.fixture(scope="module")
def images():
    return sources.synthetic_images(64, seed=5).inputs


@pytest.mark.parametrize("bn,placement,folded", [("custom", "before_relu", 4),
                                                 ("keras", "before_relu", 4),
                                                 ("custom", "after_relu", 0)])
def test_folding_preserves_logits(bn, placement, folded, images):
    model = models.lenet_cifar(bn, placement=placement)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial moving statistics and affine parameters
        if "bn" in layer.name:
            layer.set_weights([rng.uniform(0.5, 2.0, w.shape).astype(np.float32)
                               for w in layer.get_weights()])
    assert len(foldable_pairs(model)) == folded
    folded_model = fold_batch_norm(model)
    if folded:
        assert not any("BatchNormalization" in type(layer).__name__
                       for layer in folded_model.layers)
    diff = export.compare_logits(export.keras_logits(folded_model, images),
                                 export.keras_logits(model, images))
    assert diff["max_abs_logit_diff"] <= 1e-4 and diff["class_mismatch_rate"] == 0


def test_resnet20_folding_preserves_logits(images):
    model = models.resnet20("custom")
    for layer in model.layers:
        if layer.name.endswith("_bn"):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.1, np.float32))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 2.0, np.float32))
    assert len(foldable_pairs(model)) == 19
    diff = export.compare_logits(export.keras_logits(fold_batch_norm(model), images),
                                 export.keras_logits(model, images))
    assert diff["max_abs_logit_diff"] <= 1e-4


def test_nested_depthwise_separable_folded_and_the_others_kept_by_name():
    """Into Conv2D, a bias-free conv, Dense, and in the nested model DepthwiseConv2D
    and SeparableConv2D; a BN after a conv with its own ReLU and one after another BN are
    kept, and say why."""
    model = bn_tools.tools_model()
    report = fold_report(model)
    assert sorted(report.folded) == [
        ("conv", "conv_bn"), ("conv_no_bias", "renorm_bn"), ("dense", "dense_bn"),
        ("inner/dw", "inner/dw_bn"), ("inner/sep", "inner/sep_ghost_bn")]
    assert report.kept == {
        "after_relu_conv_bn": "it follows conv_relu, which applies relu before it",
        "frozen_bn": "it follows renorm_bn (BatchNormalization), not a dense or convolution layer"}
    folded = fold_batch_norm(model)
    assert [layer.name for layer in batch_norm_layers(folded)] == ["after_relu_conv_bn",
                                                                   "frozen_bn"]
    x = bn_tools.batches(1, 16)[0]
    assert bn_tools.folding_error(model, x) <= 1e-4


def test_a_bn_after_a_conv_with_an_activation_is_not_folded():
    """relu(conv(x)) then BN: folding BN into the conv would move it before the ReLU."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, BatchNormalization(name="bn")(x))
    bn_tools.randomize_batch_norm(model)
    assert foldable_pairs(model) == []
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(fold_batch_norm(model)(x).numpy(), model(x).numpy())


def test_a_subclassed_model_is_returned_as_it_is():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = keras.layers.Conv2D(4, 3), BatchNormalization(name="bn")

        def call(self, x, training=None):
            return self.bn(self.conv(x), training=training)

    model = Net()
    model(np.zeros((1, 8, 8, 3), np.float32))
    assert fold_batch_norm(model) is model
    assert fold_report(model) == FoldReport((), {
        "bn": "the model is subclassed: no graph to fold in"})


def _bn_called_twice():
    inputs = keras.Input((7,))
    bn = BatchNormalization(name="bn")
    y1 = bn(keras.layers.Dense(5, name="d1")(inputs))
    y2 = bn(keras.layers.Dense(5, name="d2")(inputs))
    return keras.Model(inputs, [y1, y2])


def test_a_bn_called_twice_is_kept_and_both_outputs_stay_right():
    model = _bn_called_twice()
    bn_tools.randomize_batch_norm(model)
    assert fold_report(model).kept == {
        "bn": "it is called 2 times in the graph; folding it into one producer would "
              "change the other calls"}
    x = np.random.default_rng(0).normal(size=(4, 7)).astype(np.float32)
    for folded, plain in zip(fold_batch_norm(model)(x), model(x), strict=True):
        np.testing.assert_allclose(folded, plain, atol=1e-6)


@pytest.mark.parametrize("shape,axis,folded", [
    ((4, 8, 8), 1, True),  # BN over the conv's channels: folded
    ((4, 8, 8), -1, False),  # BN over the width: a mismatch, kept
    ((4, 7, 7), -1, False),  # (the mismatch that once raised a reshape error)
])
def test_after_a_channels_first_conv_only_the_channel_axis_folds(shape, axis, folded):
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(5, 3, data_format="channels_first", name="conv")(inputs)
    model = keras.Model(inputs, BatchNormalization(axis=axis, name="bn")(x))
    bn_tools.randomize_batch_norm(model)
    report = fold_report(model)
    assert (report.folded == (("conv", "bn"),)) == folded
    if not folded:
        assert "is not the channel axis of conv (axis 1, channels_first)" in report.kept["bn"]
    x = np.random.default_rng(0).normal(size=(4, *shape)).astype(np.float32)
    np.testing.assert_allclose(fold_batch_norm(model)(x), model(x), atol=1e-4)


def test_a_string_or_an_unbuilt_sequential_is_refused_in_one_line():
    with pytest.raises(TypeError, match="expected a Keras model .*got str 'x'"):
        fold_batch_norm("x")
    unbuilt = keras.Sequential([keras.layers.Conv2D(4, 3), BatchNormalization()])
    with pytest.raises(ValueError, match="is not built"):
        fold_batch_norm(unbuilt)


def test_mixed_precision_folds_in_float32_for_serving():
    """Under mixed_bfloat16 the folded conv rounds W * a to bfloat16; built in float32
    (dtype="float32") it matches the unfolded model computed in float32."""
    from bn_keras.precision import dtype_policy

    with dtype_policy("mixed_bfloat16"):
        model = models.lenet_cifar("custom")
    bn_tools.randomize_batch_norm(model)
    x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype(np.float32)
    served = fold_batch_norm(model, dtype="float32")
    assert {layer.dtype_policy.name for layer in served.layers} == {"float32"}
    reference = keras.models.clone_model(
        model, clone_function=lambda layer: layer.__class__.from_config(
            {**layer.get_config(), "dtype": "float32"}))
    reference.set_weights(model.get_weights())
    np.testing.assert_allclose(served(x), reference(x), atol=1e-4)
