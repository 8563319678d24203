"""The doctor's checks of how BN layers sit in a model: does the forward pass call them
and use what they return, do they normalize their producer's channel axis, is there a
bias right before them, are they frozen. Backend-neutral (keras.ops and NumPy).

Whether a layer is called and has an effect is measured, not read off the graph: one
inference-mode forward pass with each BN layer's output perturbed in turn (y -> 2y + 1)
says whether the model's output moves. That holds for Functional, Sequential and
subclassed models alike (the tutorial's BN layers are attributes its `call` never uses).
Where no input can be made, only what the model holds answers: a BN layer left unbuilt
in a built model was never called. (A functional model holds no layer off the path to
its outputs: Keras leaves such a layer out of the model.)
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import keras
import numpy as np

from bn_keras import keras_compat
from bn_keras.doctor.findings import Finding, Severity

# Layers that carry their input's channel axis through unchanged, so a BN after them
# normalizes their producer's channels: walked through when looking for the producer.
_ELEMENTWISE = (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU,
                keras.layers.ELU, keras.layers.PReLU, keras.layers.Softmax,
                keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                keras.layers.ActivityRegularization, keras.layers.Identity)
_MERGES = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply,
           keras.layers.Average, keras.layers.Maximum, keras.layers.Minimum)
# Layers with a per-output-channel bias that a centered BN right after them cancels.
_BIASED = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
           keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
           keras.layers.SeparableConv1D, keras.layers.SeparableConv2D,
           keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
           keras.layers.Conv3DTranspose)
_NO_EFFECT = 1e-6  # relative change of the model's output below which a layer has no effect
# The tutorial's case in numbers: its BN layers did nothing, and the same network with BN
# wired in scored 1 point more (experiments/results/study_compare.md, 10 epochs, 3 seeds).
_TUTORIAL_COST = ("the BN the network was meant to have is missing: in the BN study the "
                  "tutorial's network as written scored 0.5902 +- 0.0047, the same network "
                  "with BN wired in 0.6000 +- 0.0057 (study_compare.md)")


def layer_names(model: keras.Model, layers: Sequence[keras.layers.Layer]) -> dict[int, str]:
    """{id(layer): name} for `layers`, a nested model's layers named `outer/inner`."""
    names: dict[int, str] = {}

    def walk(container, prefix: str) -> None:
        for layer in getattr(container, "layers", []):
            names.setdefault(id(layer), prefix + layer.name)
            if isinstance(layer, keras.Model):
                walk(layer, f"{prefix}{layer.name}/")

    walk(model, "")
    return {id(layer): names.get(id(layer), layer.name) for layer in layers}


def sample_input(model: keras.Model, example: Any = None):
    """An input for one forward pass: the first examples of `example` (a batch of the data)
    if given, else random normal values of the model's input shape (its graph inputs, or
    the shape it was built for); None when neither is known."""
    if example is not None:
        return keras.tree.map_structure(lambda x: x[:4], example)
    shapes = None
    if getattr(model, "inputs", None):
        shapes = [tuple(t.shape) for t in model.inputs]
        shapes = shapes[0] if len(shapes) == 1 else shapes
    else:
        config = model.get_build_config() if model.built else None
        shapes = (config or {}).get("input_shape")
    if shapes is None:
        return None
    rng = np.random.default_rng(0)

    def make(shape):
        shape = (2, *[8 if d is None else int(d) for d in tuple(shape)[1:]])
        return rng.normal(size=shape).astype(np.float32)

    try:
        if isinstance(shapes, (list, tuple)) and shapes and isinstance(shapes[0], (list, tuple)):
            return [make(s) for s in shapes]
        return make(shapes)
    except (TypeError, ValueError):
        return None


@contextlib.contextmanager
def _patched(layer, calls: list, scale: float | None) -> Iterator[None]:
    """`layer.call` recording its calls (the layer, in `calls`) and, with `scale`,
    returning y * scale + 1."""
    original = layer.call

    def call(*args, **kwargs):
        calls.append(layer)
        outputs = original(*args, **kwargs)
        return outputs if scale is None else outputs * scale + 1.0

    layer.call = call
    try:
        yield
    finally:
        del layer.call


def _forward(model, x) -> np.ndarray:
    outputs = model(x, training=False)
    flat = [keras.ops.convert_to_numpy(keras.ops.cast(o, "float32"))
            for o in keras.tree.flatten(outputs)]
    return np.concatenate([o.reshape(-1) for o in flat])


@dataclasses.dataclass(frozen=True)
class Effects:
    """What one inference-mode forward pass showed of each BN layer (by id): how often it
    was called, and how much the model's output moved (relative to its largest value)
    when the layer's output was perturbed; `order`: the layers in the order of their
    first call."""

    calls: dict[int, int]
    change: dict[int, float]
    order: tuple[keras.layers.Layer, ...]


def effects(model: keras.Model, layers: Sequence[keras.layers.Layer], x) -> Effects:
    """Calls and effect of each of `layers` in a forward pass on `x` (see the module doc)."""
    seen: list = []
    with contextlib.ExitStack() as stack:
        for layer in layers:
            stack.enter_context(_patched(layer, seen, None))
        reference = _forward(model, x)
    calls = {id(layer): sum(1 for s in seen if s is layer) for layer in layers}
    scale = max(float(np.max(np.abs(reference))), 1e-12) if reference.size else 1.0
    change = {}
    for layer in layers:
        change[id(layer)] = 0.0
        if calls[id(layer)]:
            with _patched(layer, [], 2.0):
                perturbed = _forward(model, x)
            change[id(layer)] = float(np.max(np.abs(perturbed - reference))) / scale
    order = []
    for layer in seen:
        if layer not in order:
            order.append(layer)
    return Effects(calls, change, tuple(order))


def check_reach(model: keras.Model, layers: Sequence[keras.layers.Layer],
                names: dict[int, str], measured: Effects | None
                ) -> tuple[list[Finding], dict[str, str]]:
    """BN layers the forward pass never calls, or whose output does not reach the model's
    output: "this layer has no effect". From `measured` (`effects`; see the module doc), or
    from what is built when it is None."""
    skipped = {}
    if measured is not None:
        never = [layer for layer in layers if measured.calls[id(layer)] == 0]
        unused = [layer for layer in layers
                  if measured.calls[id(layer)] and measured.change[id(layer)] < _NO_EFFECT]
        how_never = "0 calls in an inference-mode forward pass"
        how_unused = ("called, but perturbing its output (y -> 2y + 1) changes the model's "
                      "output by less than 1e-6")
        numbers = {names[id(layer)]: {"calls": measured.calls[id(layer)],
                                      "output_change": measured.change[id(layer)]}
                   for layer in never + unused}
    else:
        skipped["effect"] = ("no input to run the model on (no data, and no input shape in "
                             "the model): only unbuilt layers are known to be never called")
        never = [layer for layer in layers if not layer.built and model.built]
        unused, how_unused = [], ""
        how_never = "the model is built but this layer is not: nothing ever called it"
        numbers = {}
    findings = []
    if never:
        unbuilt = [names[id(layer)] for layer in never if not layer.built]
        findings.append(Finding(
            "never_called", Severity.ERROR, tuple(names[id(layer)] for layer in never),
            _no_effect("never called by the forward pass", len(never)),
            how_never + ("; never built (no weights)" if unbuilt else "") + ".",
            "call it in the forward pass where the network should normalize (e.g. "
            "x = self.bn1(self.conv1(x)) before the ReLU), or delete it; then train again",
            cost=_TUTORIAL_COST, numbers=numbers))
    if unused:
        findings.append(Finding(
            "output_unused", Severity.ERROR, tuple(names[id(layer)] for layer in unused),
            _no_effect("output never reaches the model's output", len(unused)),
            how_unused + ".",
            "use what the layer returns (x = bn(x), not bn(x) alone); then train again",
            cost=_TUTORIAL_COST, numbers=numbers))
    return findings, skipped


def _no_effect(why: str, count: int) -> str:
    return f"{why}: {'these BN layers have' if count > 1 else 'this BN layer has'} no effect"


def _in_graph(layer) -> bool:
    """Whether `layer` is called exactly once in a functional graph (so its input and
    producer are known)."""
    try:
        return len(keras_compat.calls(layer)) == 1 and layer.input is not None
    except (AttributeError, ValueError):
        return False


def _channel_source(bn):
    """(the layer that decides the channel axis of the BN's input, that axis) walking back
    through elementwise layers; (None, None) when unknown."""
    tensor = bn.input
    for _ in range(32):
        layer = keras_compat.producer(tensor)
        if layer is None:
            return None, None
        rank = len(tensor.shape)
        if isinstance(layer, keras.layers.Dense):
            return layer, rank - 1
        data_format = getattr(layer, "data_format", None)
        if data_format in ("channels_first", "channels_last"):
            return layer, (1 if data_format == "channels_first" and rank > 2 else rank - 1)
        if isinstance(layer, _ELEMENTWISE) and _in_graph(layer):
            tensor = layer.input
        elif isinstance(layer, _MERGES) and _in_graph(layer):
            tensor = keras.tree.flatten(layer.input)[0]
        else:
            return None, None
    return None, None


def check_axes(layers: Sequence[keras.layers.Layer], names: dict[int, str]
               ) -> tuple[list[Finding], dict[str, str]]:
    """A BN whose axis is not its producer's channel axis (BatchNormalization(axis=-1)
    after Conv2D(data_format="channels_first") normalizes the width)."""
    findings, unknown = [], []
    for bn in layers:
        if not _in_graph(bn):
            unknown.append(names[id(bn)])
            continue
        shape = tuple(bn.input.shape)
        rank = len(shape)
        axis = bn.axis if isinstance(bn.axis, int) else None
        producer, expected = _channel_source(bn)
        if producer is None or axis is None:
            continue
        axis %= rank
        if axis == expected:
            continue
        where = getattr(producer, "data_format", None) or "features last"
        findings.append(Finding(
            "axis_mismatch", Severity.ERROR, (names[id(bn)],),
            "BN normalizes the wrong axis: not its producer's channels",
            f"axis {axis} of {producer.name}'s output {shape} ({shape[axis]} statistics, one "
            f"per index of that axis); {producer.name} ({type(producer).__name__}, "
            f"{where}) holds its {shape[expected]} channels on axis {expected}.",
            f"BatchNormalization(axis={expected}) after a channels_first layer (or the "
            "producer channels_last, the BN axis=-1); then train again: the statistics and "
            "gamma/beta learned on the wrong axis do not transfer",
            cost="not measurable without training again with the right axis",
            numbers={"axis": axis, "expected_axis": expected, "shape": list(shape)}))
    skipped = {}
    if unknown:
        skipped["axis"] = (f"{', '.join(unknown)}: not in a functional graph (subclassed "
                           "model, or called more than once): the producer is unknown")
    return findings, skipped


def check_bias(layers: Sequence[keras.layers.Layer], names: dict[int, str]) -> list[Finding]:
    """A bias in the conv/dense right before a centered BN: BN subtracts the batch mean, so
    in training the bias changes nothing and gets no gradient; its parameters are wasted."""
    wasted = {}
    for bn in layers:
        if not (bn.center and _in_graph(bn)):
            continue
        producer = keras_compat.producer(bn.input)
        if not (isinstance(producer, _BIASED) and getattr(producer, "use_bias", False)
                and getattr(producer.activation, "__name__", "") == "linear"
                and _in_graph(producer) and len(keras_compat.consumers(producer)) == 1):
            continue
        _, expected = _channel_source(bn)
        if expected is not None and bn.axis % len(bn.input.shape) != expected:
            continue  # normalizing another axis: the bias is not cancelled (axis_mismatch)
        bias = keras.ops.convert_to_numpy(producer.bias)
        wasted[names[id(bn)]] = (producer.name, int(bias.size), float(np.max(np.abs(bias))))
    if not wasted:
        return []
    total = sum(size for _, size, _ in wasted.values())
    pairs = "; ".join(f"{p} ({n} biases, max |b| {m:.2g}) before {bn}"
                      for bn, (p, n, m) in wasted.items())
    return [Finding(
        "bias_before_bn", Severity.INFO, tuple(wasted),
        "bias right before a centered BN: wasted parameters",
        f"{total} bias parameters: {pairs}. In training BN subtracts the batch mean, which "
        "holds the bias: the output does not depend on it and it gets no gradient.",
        "use_bias=False in " + ", ".join(sorted({p for p, _, _ in wasted.values()}))
        + " (beta is the bias); nothing else changes (fold_batch_norm absorbs it when "
        "serving, but that is not a fix of the model)",
        cost=f"{total} parameters, no accuracy", numbers={"parameters": total})]


def check_frozen(layers: Sequence[keras.layers.Layer], names: dict[int, str]) -> list[Finding]:
    """BN layers with trainable=False: in Keras that also means inference mode, in `fit`
    too (keras-team/keras#9214, #9965), unlike PyTorch's requires_grad=False."""
    frozen = [bn for bn in layers if not bn.trainable]
    if not frozen:
        return []
    share = f"{len(frozen)} of {len(layers)}"
    return [Finding(
        "frozen", Severity.INFO, tuple(names[id(bn)] for bn in frozen),
        "frozen BN (trainable=False): inference mode, also during fit",
        f"{share} BN layers frozen: they normalize with their moving statistics in training "
        "too and never update them, and gamma/beta do not train (Keras' trainable=False; "
        "PyTorch's requires_grad=False keeps batch statistics in train mode).",
        "right for fine-tuning at small batches (freeze_batch_norm; timm's "
        "freeze_batch_norm_2d); to train gamma/beta with batch statistics instead, set "
        "trainable=True and let fit pass training=True",
        numbers={"frozen": len(frozen), "bn_layers": len(layers)})]
