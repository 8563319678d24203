"""bn_keras.load_model: `.keras` files holding our classes, including those written by 0.1.0.

tests/fixtures/*_0.1.0.keras were saved by bn_keras 0.1.0 (a flat package): they hold our
BatchNormalization (Ghost BN), ZeroPadShortcut, FoldedBatchNorm and the label-smoothing
loss, and the tutorial's subclassed LeNet, under their registered names.
"""

import os

import numpy as np
import pytest

import bn_keras
from bn_keras.layers import BatchNormalization, FoldedBatchNorm
from bn_keras.losses import SmoothedSparseCrossentropy
from bn_keras.models import TutorialLeNet, ZeroPadShortcut

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def _data(name):
    return os.path.join(DATA, name)


def test_files_of_0_1_0_load_with_every_class_and_the_same_outputs():
    model = bn_keras.load_model(_data("every_class_0.1.0.keras"))
    assert isinstance(model.get_layer("bn"), BatchNormalization)
    assert model.get_layer("bn").virtual_batch_size == 2
    assert isinstance(model.get_layer("shortcut"), ZeroPadShortcut)
    assert isinstance(model.get_layer("folded"), FoldedBatchNorm)
    assert isinstance(model.loss, SmoothedSparseCrossentropy) and model.loss.label_smoothing == 0.1
    x = np.load(_data("every_class_0.1.0_inputs.npy"))
    np.testing.assert_allclose(np.asarray(model(x, training=False)),
                               np.load(_data("every_class_0.1.0_outputs.npy")), atol=1e-6)
    tutorial = bn_keras.load_model(_data("lenet_tutorial_0.1.0.keras"))
    assert isinstance(tutorial, TutorialLeNet)
    x = np.load(_data("lenet_tutorial_0.1.0_inputs.npy"))
    np.testing.assert_allclose(np.asarray(tutorial(x)),
                               np.load(_data("lenet_tutorial_0.1.0_outputs.npy")), atol=1e-6)


@pytest.mark.slow
def test_a_fresh_process_needs_only_bn_keras_load_model(scripts):
    code = ("import bn_keras, sys; "
            f"m = bn_keras.load_model({_data('every_class_0.1.0.keras')!r}); "
            f"t = bn_keras.load_model({_data('lenet_tutorial_0.1.0.keras')!r}); "
            "print(type(m.get_layer('bn')).__module__, type(t).__name__)")
    proc = scripts.run(None, prelude=code, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["bn_keras.layers.batch_normalization", "TutorialLeNet"]
