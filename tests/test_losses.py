"""bn_keras.train.losses: label smoothing for integer labels."""

import keras
import numpy as np

from bn_keras.train import losses
from bn_keras.train.config import TrainConfig


def test_label_smoothing_loss_matches_categorical_crossentropy():
    logits = np.random.default_rng(0).normal(size=(6, 10)).astype(np.float32)
    labels = np.arange(6) % 10
    ours = losses.SmoothedSparseCrossentropy(0.1)(labels, logits)
    expected = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(
        keras.ops.one_hot(labels, 10), logits)
    np.testing.assert_allclose(float(ours), float(expected), rtol=1e-6)


def test_the_config_picks_the_loss():
    assert isinstance(losses.make_loss(TrainConfig(label_smoothing=0.1)),
                      losses.SmoothedSparseCrossentropy)
    plain = losses.make_loss(TrainConfig())
    assert isinstance(plain, keras.losses.SparseCategoricalCrossentropy)
