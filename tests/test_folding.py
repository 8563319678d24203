"""bn_keras.layers.folding: inference-mode BN folded into the layer before it."""

import numpy as np
import pytest

from bn_keras import models
from bn_keras.data import sources
from bn_keras.layers import fold_batch_norm, foldable_pairs
from bn_keras.serve import export


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
