"""The BN doctor's catalogue: models broken the way BN users break them, and healthy ones,
each built and trained the way the mistake is made, with what the doctor must find.

One catalogue feeds both the tests (a tiny network on synthetic images: the fixtures in
tests/fixtures/doctor/, made by tests/fixtures/make_doctor_fixtures.py) and the report
on real CIFAR-10 (LeNet: experiments/doctor_catalogue.py ->
experiments/results/bn_doctor.md). Training runs on TensorFlow (tf.data, and the custom loop is a
tf.GradientTape loop; imported where used); the models and the doctor run on any backend.

    for case in CASES:
        model = case.train(TrainingData(train_images, train_labels), network="lenet")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np

from bn_keras import models
from bn_keras.data.cifar import MEAN, STD
from bn_keras.layers.batch_normalization import BatchNormalization
from bn_keras.layers.freezing import freeze_batch_norm
from bn_keras.precision import dtype_policy

NUM_CLASSES = 10
# The networks' inputs: LeNet CIFAR-10's images, the tiny one synthetic_data's.
IMAGE_SHAPES = {"lenet": (32, 32, 3), "tiny": (16, 16, 3)}


def standardized(images: np.ndarray) -> np.ndarray:
    """uint8 images as every run here serves them, in NumPy (bn_keras.data.pipelines.
    normalize_images does it in TensorFlow): CIFAR-10's channel statistics."""
    return ((images.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)
            ).astype(np.float32)


def synthetic_data(examples: int, seed: int = 0, contrast: float = 0.2,
                   noise: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """16x16 uint8 images whose class is a faint mean colour (`contrast` of a palette's
    distance from grey) under pixel noise, and their labels: the tiny network learns them,
    but not perfectly, so wrong statistics cost accuracy there."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, examples)
    palette = np.random.default_rng(1234).uniform(40, 215, (NUM_CLASSES, 1, 1, 3))
    images = 128 + (palette[labels] - 128) * contrast + rng.normal(
        0, noise, (examples, *IMAGE_SHAPES["tiny"]))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """Training images (uint8, [N, 32, 32, 3]) and labels, standardized as every run here
    (bn_keras.data.pipelines.normalize_images) when served; `epochs` over the first
    `examples` of them."""

    images: np.ndarray
    labels: np.ndarray
    epochs: int = 3
    examples: int | None = None

    def batches(self, batch_size: int, seed: int = 0, examples: int | None = None,
                epochs: int | None = None, steps: int | None = None):
        """Shuffled, standardized batches (a tf.data.Dataset): `epochs` passes over the
        first `examples`, or exactly `steps` batches."""
        import tensorflow as tf

        from bn_keras.data import pipelines

        count = examples or self.examples or len(self.labels)
        ds = tf.data.Dataset.from_tensor_slices((self.images[:count], self.labels[:count]))
        ds = ds.shuffle(count, seed=seed, reshuffle_each_iteration=True)
        ds = ds.repeat(None if steps else epochs or self.epochs).batch(batch_size)
        if steps:
            ds = ds.take(steps)
        return ds.map(lambda x, y: (pipelines.normalize_images(x), y)).prefetch(2)


def network(size: str = "lenet", bn: str = "keras", momentum: float = 0.99,
            use_bias: bool = False, channels_first: bool = False,
            name: str | None = None) -> keras.Model:
    """LeNet on CIFAR's 32x32 images (conv 6@5x5, conv 16@5x5, dense 120, dense 84), or a
    tiny CNN on 16x16 ones (conv 8@3x3, conv 16@3x3, dense 32), each conv and hidden dense
    followed by BN (`bn`: "keras", "custom" or "none") and a ReLU, logits out.
    `use_bias`: a bias before each BN (the mistake); `channels_first`: the convolutions
    channels_first, their BN left at axis=-1 (the other mistake)."""
    convs, dense, kernel = (((6, 16), (120, 84), 5) if size == "lenet"
                            else ((8, 16), (32,), 3))
    data_format = "channels_first" if channels_first else "channels_last"
    inputs = keras.Input(IMAGE_SHAPES[size], name="image")
    x = keras.layers.Permute((3, 1, 2), name="to_channels_first")(inputs) \
        if channels_first else inputs

    def normalized(x, layer_name):
        if bn == "none":
            return keras.layers.ReLU(name=f"{layer_name}_relu")(x)
        cls = keras.layers.BatchNormalization if bn == "keras" else BatchNormalization
        x = cls(momentum=momentum, name=f"{layer_name}_bn")(x)  # axis=-1, whatever the format
        return keras.layers.ReLU(name=f"{layer_name}_relu")(x)

    for i, filters in enumerate(convs, start=1):
        x = keras.layers.Conv2D(filters, kernel, use_bias=use_bias or bn == "none",
                                data_format=data_format, name=f"conv{i}")(x)
        x = normalized(x, f"conv{i}")
        x = keras.layers.MaxPooling2D(2, data_format=data_format, name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for i, units in enumerate(dense, start=1):
        x = keras.layers.Dense(units, use_bias=use_bias or bn == "none", name=f"fc{i}")(x)
        x = normalized(x, f"fc{i}")
    outputs = keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"{size}_{bn}")


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _compiled(model, optimizer) -> keras.Model:
    model.compile(optimizer=optimizer, loss=_loss(),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


def _fit(model, data: TrainingData, batch_size: int = 128, optimizer=None, **batches):
    _compiled(model, optimizer or keras.optimizers.Adam(1e-3))
    model.fit(data.batches(batch_size, **batches), verbose=0, shuffle=False)
    return model


# ------------------------------------------------------------------------- the cases
def _settling(data: TrainingData, batch_size: int = 128) -> keras.optimizers.Optimizer:
    """Adam from 1e-3, cosine-decayed to 0 over the run: the weights settle at the end, and
    BN's moving statistics (momentum 0.99) catch up with them."""
    steps = data.epochs * -(-(data.examples or len(data.labels)) // batch_size)
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps))


def healthy_keras(data: TrainingData, size: str, name: str = "healthy_keras") -> keras.Model:
    """Keras' BN, Adam 1e-3 decayed to 0 (cosine), batch 128, BN momentum 0.99."""
    return _fit(network(size, "keras", name=name), data, optimizer=_settling(data))


def healthy_custom(data: TrainingData, size: str) -> keras.Model:
    """Our BN, Adam 1e-3 decayed to 0 (cosine), batch 128, BN momentum 0.99."""
    return _fit(network(size, "custom", name="healthy_custom"), data, optimizer=_settling(data))


def no_bn(data: TrainingData, size: str) -> keras.Model:
    """No BN at all (biases kept): nothing for the doctor to find."""
    return _fit(network(size, "none", name="no_bn"), data, optimizer=_settling(data))


def tutorial_as_written(data: TrainingData, size: str) -> keras.Model:
    """The tutorial's network: BN layers created in __init__, never called in call()."""
    return _fit(models.lenet_tutorial("keras"), data)


def no_training_flag(data: TrainingData, size: str) -> keras.Model:
    """A custom training loop calling model(x) without training=True: BN runs in inference
    mode, normalizing by its initial statistics, which never update
    (keras-team/keras#20378)."""
    import tensorflow as tf

    model = network(size, "keras", name="no_training_flag")
    optimizer = keras.optimizers.Adam(1e-3)
    loss_fn = _loss()

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))  # the mistake: no training=True
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    for x, y in data.batches(128):
        step(x, y)
    return _compiled(model, optimizer)  # compiled to evaluate; the optimizer keeps its steps


def ema_raw_statistics(data: TrainingData, size: str) -> keras.Model:
    """Keras' weight EMA (Adam 3e-3, use_ema, ema_momentum 0.999): fit ends with the averaged
    weights swapped in, BN's moving statistics still those of the trained weights
    (huggingface/pytorch-image-models#245)."""
    optimizer = keras.optimizers.Adam(3e-3, use_ema=True, ema_momentum=0.999)
    return _fit(network(size, "keras", name="ema_raw_statistics"), data, optimizer=optimizer)


def large_learning_rate(data: TrainingData, size: str) -> keras.Model:
    """SGD at a learning rate of 0.5 for 400 steps: the weights move faster than the moving
    statistics (momentum 0.99) follow."""
    return _fit(network(size, "keras", name="large_learning_rate"), data,
                optimizer=keras.optimizers.SGD(0.5, momentum=0.9), steps=400)


def batch_2(data: TrainingData, size: str) -> keras.Model:
    """Batch 2, as the BN study's smallest arm: one epoch over the first 4,000 images."""
    return _fit(network(size, "keras", name="batch_2"), data, batch_size=2,
                examples=min(4000, len(data.labels)), epochs=1)


def nan_statistics(data: TrainingData, size: str) -> keras.Model:
    """Trained under mixed_float16, then one training-mode batch whose activations overflow
    float16 (65,504): its statistics enter the moving averages as inf/NaN, and stay there
    (pytorch/pytorch#88474)."""
    with dtype_policy("mixed_float16"):
        model = _fit(network(size, "keras", name="nan_statistics"), data)
    x, _ = next(iter(data.batches(128)))
    model(x * 1e6, training=True)  # one batch whose activations overflow float16
    return model


def channels_first_axis(data: TrainingData, size: str) -> keras.Model:
    """Convolutions channels_first, BN left at axis=-1: it normalizes the width."""
    return _fit(network(size, "keras", channels_first=True, name="channels_first_axis"), data)


def momentum_0999_100_steps(data: TrainingData, size: str) -> keras.Model:
    """BN momentum 0.999 and only 100 training steps: 0.999^100 = 0.905 of the moving
    statistics is still their initial value."""
    return _fit(network(size, "keras", momentum=0.999, name="momentum_0999_100_steps"), data,
                steps=100)


def bias_before_bn(data: TrainingData, size: str) -> keras.Model:
    """The healthy recipe with a bias in every conv/dense before BN."""
    return _fit(network(size, "keras", use_bias=True, name="bias_before_bn"), data,
                optimizer=_settling(data))


def frozen_fine_tuned(data: TrainingData, size: str) -> keras.Model:
    """Trained, then fine-tuned at batch 16 with BN frozen (freeze_batch_norm): healthy."""
    model = healthy_keras(data, size, name="frozen_fine_tuned")
    freeze_batch_norm(model)
    return _fit(model, data, batch_size=16, optimizer=keras.optimizers.Adam(1e-4),
                examples=min(2000, len(data.labels)), epochs=1)


@dataclasses.dataclass(frozen=True)
class Case:
    """A catalogue entry: how the model is made (`make(data, size)`), what the doctor must
    find (`expected`: (check, a layer the finding must name, or None for the model)),
    whether it is healthy (no error), and whether `repair_batch_norm` (--fix) can repair
    it without a code change. `batch_size`: the batch it was trained at."""

    name: str
    make: Callable[[TrainingData, str], keras.Model]
    expected: tuple[tuple[str, str | None], ...]
    healthy: bool = False
    fixable: bool = False
    batch_size: int = 128

    @property
    def description(self) -> str:
        return " ".join((self.make.__doc__ or "").split("\n\n")[0].split())

    def train(self, data: TrainingData, size: str = "lenet", seed: int = 0) -> keras.Model:
        keras.utils.set_random_seed(seed)
        return self.make(data, size)


CASES = (
    Case("tutorial_as_written", tutorial_as_written, (("never_called", "bn1"),
                                                      ("never_called", "bn2"))),
    Case("no_training_flag", no_training_flag, (("statistics_never_updated", "conv1_bn"),)),
    Case("ema_raw_statistics", ema_raw_statistics, (("stale_statistics", None),),
         fixable=True),
    Case("large_learning_rate", large_learning_rate, (("stale_statistics", None),),
         fixable=True),
    Case("batch_2", batch_2, (("small_batch", "conv1_bn"),), batch_size=2),
    Case("nan_statistics", nan_statistics, (("non_finite_statistics", "conv1_bn"),),
         fixable=True),
    Case("channels_first_axis", channels_first_axis, (("axis_mismatch", "conv1_bn"),
                                                      ("axis_mismatch", "conv2_bn"))),
    Case("momentum_0999_100_steps", momentum_0999_100_steps,
         (("initial_statistics", "conv1_bn"),), fixable=True),
    Case("bias_before_bn", bias_before_bn, (("bias_before_bn", "conv1_bn"),), healthy=True),
    Case("healthy_keras", healthy_keras, (), healthy=True),
    Case("healthy_custom", healthy_custom, (), healthy=True),
    Case("frozen_fine_tuned", frozen_fine_tuned, (("frozen", "conv1_bn"),), healthy=True),
    Case("no_bn", no_bn, (), healthy=True),
)
BY_NAME = {case.name: case for case in CASES}
# The tests' data for the tiny network's fixtures: calibration from the training images
# (synthetic_data(2048, seed=0), the first 1,024), evaluation on fresh ones.
FIXTURE_TRAINING = (2048, 0)
FIXTURE_EVALUATION = (1024, 1)


def fixture_data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray]]:
    """((evaluation images, labels), (calibration images,)) for the fixtures, standardized:
    as `diagnose_batch_norm(model, evaluation, calibration_data=calibration)` takes them."""
    images, _ = synthetic_data(*FIXTURE_TRAINING)
    x, y = synthetic_data(*FIXTURE_EVALUATION)
    return (standardized(x), y), (standardized(images[:1024]),)


def missed(case: Case, diagnosis) -> list[str]:
    """What the doctor got wrong on `case` (empty if nothing): each expected finding it did
    not make, naming the right layer ("check@layer"), and any error on a healthy model."""
    wrong = [f"{check}@{layer or 'model'}" for check, layer in case.expected
             if not any(f.check == check and (layer is None or layer in f.layers)
                        for f in diagnosis.findings)]
    if case.healthy and not diagnosis.healthy:
        wrong += [f"an error on a healthy model: {f.line()}" for f in diagnosis.errors]
    return wrong
