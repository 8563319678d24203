"""The model builders: exact tutorial architectures and the BN switch."""

import keras
import numpy as np
import pytest
from extras import needs_extra

from bn_keras import models
from bn_keras.layers import BN_TYPES, BatchNormalization


def _producer(layer):
    """The name of the layer whose output `layer` consumes."""
    return layer.input._keras_history.operation.name


def _bn_layers(model):
    return [layer for layer in model.layers if isinstance(layer, BN_TYPES)]


def test_conv1d_example_is_the_tutorials():
    model = models.conv1d_bn_example()
    assert model.input_shape == (None, 128, 256)
    assert model.output_shape == (None, 126, 64)
    conv, bn = model.layers[1], model.layers[2]
    assert isinstance(conv, keras.layers.Conv1D) and conv.filters == 64 and conv.kernel_size == (3,)
    assert type(bn) is keras.layers.BatchNormalization
    assert type(models.conv1d_bn_example("custom").layers[2]) is BatchNormalization


def test_lenet_without_bn_has_the_tutorials_62006_parameters():
    model = models.lenet_cifar("none")
    assert model.count_params() == 62_006
    assert model.output_shape == (None, 10)
    assert not _bn_layers(model)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [(c.filters, c.kernel_size) for c in convs] == [(6, (5, 5)), (16, (5, 5))]
    assert [d.units for d in dense] == [120, 84, 10]


@pytest.mark.parametrize("bn,cls", [("keras", keras.layers.BatchNormalization),
                                    ("custom", BatchNormalization)])
def test_lenet_bn_is_in_the_forward_path(bn, cls):
    """Unlike the tutorial, every BN layer is wired in: it changes the output."""
    model = models.lenet_cifar(bn)
    norms = _bn_layers(model)
    assert len(norms) == 4 and all(type(norm) is cls for norm in norms)
    # conv -> BN -> ReLU: each BN consumes its conv/dense layer's output.
    for norm in norms:
        assert _producer(norm).startswith(("conv", "fc")), _producer(norm)
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    before = model(x, training=False).numpy()
    norms[0].moving_mean.assign(np.full(6, 5.0, np.float32))
    assert np.max(np.abs(model(x, training=False).numpy() - before)) > 1e-3


def test_tutorial_network_is_the_no_bn_network():
    """BN built but never called: 62,006 parameters and the no-BN forward pass."""
    tutorial, plain = models.lenet_tutorial("keras"), models.lenet_cifar("none")
    assert tutorial.count_params() == plain.count_params() == 62_006
    assert not tutorial.bn1.built and not tutorial.bn2.built
    plain.set_weights(tutorial.get_weights())
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(tutorial(x, training=True).numpy(), plain(x, training=True).numpy(),
                               atol=1e-6)


def test_keras_and_custom_lenet_are_interchangeable():
    theirs, ours = models.lenet_cifar("keras"), models.lenet_cifar("custom")
    ours.set_weights(theirs.get_weights())
    x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype(np.float32)
    for training in (True, False):
        np.testing.assert_allclose(ours(x, training=training).numpy(),
                                   theirs(x, training=training).numpy(), atol=1e-4)


def test_bn_placement_after_relu():
    model = models.lenet_cifar("custom", placement="after_relu")
    for norm in _bn_layers(model):
        assert _producer(norm).endswith("_relu"), _producer(norm)


def test_bn_options_reach_every_bn_layer():
    model = models.resnet20("custom", momentum=0.9, virtual_batch_size=2)
    norms = _bn_layers(model)
    assert len(norms) == 19
    assert all(norm.momentum == 0.9 and norm.virtual_batch_size == 2 for norm in norms)


@pytest.mark.parametrize("bn,params", [("none", 269_034), ("keras", 271_098), ("custom", 271_098)])
def test_resnet20_has_about_027m_parameters(bn, params):
    model = models.resnet20(bn)
    assert model.count_params() == params
    assert model.output_shape == (None, 10)
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers) == 19


@pytest.mark.parametrize("builder", [models.lenet_cifar, models.resnet20, models.conv1d_bn_example])
def test_unknown_bn_names_the_choices(builder):
    with pytest.raises(ValueError, match="bn='batch'; expected one of none, keras, custom"):
        builder(bn="batch")


def test_build_model_by_name():
    assert models.build_model("lenet", "none").count_params() == 62_006
    with pytest.raises(ValueError, match="model='vgg'; expected one of lenet, resnet20"):
        models.build_model("vgg", "none")
    with pytest.raises(ValueError, match="placement='middle'"):
        models.lenet_cifar("custom", placement="middle")


@pytest.mark.slow
@needs_extra("backends", "jax", "scipy")  # Keras' NumPy backend imports both
def test_models_build_and_run_without_tensorflow(scripts):
    """On Keras' NumPy backend, with TensorFlow unimportable: every builder, our BN inside,
    builds and computes. (Training on JAX and PyTorch: tests/backends/test_other_backends.py.)"""
    code = "\n".join([
        "import sys",
        "sys.modules['tensorflow'] = None",
        "import numpy as np",
        "from bn_keras import models",
        "for name in models.MODEL_BUILDERS:",
        "    model = models.build_model(name, 'custom')",
        "    shape = (128, 256) if name == 'conv1d_example' else (32, 32, 3)",
        "    y = np.asarray(model(np.ones((2, *shape), 'float32'), training=True))",
        "    print(name, y.shape, bool(np.all(np.isfinite(y))))",
    ])
    proc = scripts.run(None, prelude=code, env={"KERAS_BACKEND": "numpy"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[:4] == [
        "lenet (2, 10) True", "resnet20 (2, 10) True", "conv1d_example (2, 126, 64) True",
        "lenet_tutorial (2, 10) True"]


def _multiply_adds(model):
    """Multiply-adds of one example's forward pass through the convolutions and dense
    layers (their kernels times the output positions)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
            total += int(np.prod(layer.kernel.shape)) * int(np.prod(layer.output.shape[1:-1]))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


@pytest.mark.parametrize("name", ["lenet", "resnet20", "conv1d_example"])
def test_multiply_adds_per_example_are_counted_from_the_layers(name):
    options = {"num_classes": 10} if name == "conv1d_example" else {}
    for bn in ("none", "custom"):
        model = models.build_model(name, "keras" if name == "conv1d_example" else bn, **options)
        assert models.MACS_PER_EXAMPLE[name] == _multiply_adds(model)
    assert models.MACS_PER_EXAMPLE["lenet_tutorial"] == models.MACS_PER_EXAMPLE["lenet"]


def test_zero_init_residual_starts_every_block_as_the_identity():
    """Each block's last BN starts at gamma = 0, so every block outputs relu(shortcut);
    only those nine BN layers; refused where it cannot apply."""
    model = models.resnet20("custom", zero_init_residual=True)
    zeroed = [layer.name for layer in model.layers
              if layer.name.endswith("_bn") and not np.any(layer.gamma.numpy())]
    assert zeroed == [f"stage{s}_block{b}_2_bn" for s in (1, 2, 3) for b in (1, 2, 3)]
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    probe = keras.Model(model.input, [model.get_layer("stage1_block1_out").output,
                                      model.get_layer("stem_relu").output])
    out, stem = probe(x, training=False)
    np.testing.assert_allclose(out.numpy(), np.maximum(stem.numpy(), 0), atol=1e-6)
    for bad in (dict(bn="none"), dict(bn="custom", placement="after_relu")):
        with pytest.raises(ValueError, match="zero_init_residual"):
            models.resnet20(zero_init_residual=True, **bad)
    with pytest.raises(ValueError, match="applies to model='resnet20'"):
        models.check_options("lenet", "custom", zero_init_residual=True)
