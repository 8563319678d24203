"""bn_keras.train.diagnostics: gradient norms and pre-activations that leave the model unchanged."""

import keras
import numpy as np

from bn_keras import models
from bn_keras.data import pipelines, sources
from bn_keras.train import diagnostics


def _batch(n=32):
    examples = sources.synthetic_images(n, seed=1)
    return pipelines.normalize_images(examples.inputs).numpy(), examples.labels


def test_probe_leaves_weights_and_moving_statistics_unchanged():
    keras.utils.set_random_seed(0)
    model = models.lenet_cifar("custom")
    before = [w.copy() for w in model.get_weights()]
    values = diagnostics.probe(model, *_batch())
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert set(values["preactivation"]) == {"conv1_relu", "conv2_relu", "fc1_relu", "fc2_relu"}
    # BN before the ReLU: its input is normalized over the probe batch (gamma 1, beta 0).
    conv1 = values["preactivation"]["conv1_relu"]
    assert abs(conv1.mean()) < 1e-3 and abs(conv1.std() - 1.0) < 0.01
    assert set(values["bn"]) >= {"conv1_bn/gamma", "conv1_bn/moving_variance"}


def test_gradient_norms_match_a_direct_computation():
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = models.lenet_cifar("none")
    x, y = _batch()
    norms = diagnostics.gradient_norms(model, x, y)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    layer = model.get_layer("fc1")
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, layer.trainable_weights)
    expected = np.sqrt(sum(float(tf.reduce_sum(g * g)) for g in grads))
    np.testing.assert_allclose(norms["fc1"], expected, rtol=1e-5)
    assert set(norms) == {"conv1", "conv2", "fc1", "fc2", "logits"}


def test_relu_layers_found_in_order():
    names = [layer.name for layer in diagnostics.relu_layers(models.resnet20("none"))]
    assert names[0] == "stem_relu" and names[-1] == "stage3_block3_out" and len(names) == 19
