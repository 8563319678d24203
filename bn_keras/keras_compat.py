"""Every private Keras and TensorFlow name bn_keras reads or patches, and every Keras bug
it works around, in one place.

Each function below uses a name that Keras or TensorFlow does not promise to keep, or
steps around a bug: it says what for, and why no public name serves. They were checked
with the versions in `CHECKED_WITH`; a Keras or TensorFlow upgrade must recheck them:
`missing()` lists the names the installed versions no longer have, and
tests/test_keras_compat.py fails naming them (and when a bug worked around here is
fixed), before anything that relies on them misbehaves.

Keras' own names are needed on every backend; TensorFlow's only where Keras runs on it
(they are imported inside the functions that use them).
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable, Iterator
from typing import Any

CHECKED_WITH = {"keras": "3.15.1", "tensorflow": "2.21.0"}


# ---------------------------------------------------------------------------- Keras
def graph_model_types() -> tuple[type, ...]:
    """The model classes that hold a graph of layers (Functional, Sequential): folding
    needs a graph. Keras has no public name for "Functional"; `keras.Model(inputs,
    outputs)` returns one, but `isinstance(m, keras.Model)` is true of subclassed models
    too."""
    import keras
    from keras.src.models.functional import Functional

    return (Functional, keras.Sequential)


def flatten_layers(layer) -> Iterator[Any]:
    """Every layer inside `layer`, nested models and layers held as attributes included,
    `layer` itself excluded (`Layer._flatten_layers`). `model.layers` lists only the top
    level, and a subclassed model's layers are its attributes."""
    return layer._flatten_layers(include_self=False, recursive=True)


def producer(tensor) -> Any:
    """The layer (operation) whose call output `tensor`, a symbolic tensor of a functional
    graph, or None (`KerasTensor._keras_history`: Keras' graph has no public accessor)."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


def calls(layer) -> list:
    """The graph nodes at which `layer` is called (`Layer._inbound_nodes`): how many times a
    layer is used in a functional graph. `layer.input` answers the first call's input
    without raising, whatever the count."""
    return list(layer._inbound_nodes)


def consumers(layer) -> list:
    """The graph nodes that take `layer`'s output (`Layer._outbound_nodes`)."""
    return list(layer._outbound_nodes)


def optimizer_averages(optimizer) -> list[tuple[Any, Any]]:
    """(trainable variable, its moving average) pairs of an optimizer with `use_ema`, once
    built (`_trainable_variables`, `_model_variables_moving_average`): Keras keeps the
    averages private and only swaps them in wholesale (`finalize_variable_values`). A
    LossScaleOptimizer holds them in its (public) inner optimizer."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return [(v, a) for v, a in zip(inner._trainable_variables,
                                   inner._model_variables_moving_average, strict=True)
            if a is not None]


def keep_averages_apart(optimizer) -> None:
    """Stops an optimizer with `use_ema` from copying the averages over the trained weights
    at the end of every `fit` (`Optimizer.finalize_variable_values`, which `fit` calls with
    no way to opt out; a run here calls `fit` once per epoch)."""
    optimizer.finalize_variable_values = lambda var_list: None


def weights_h5_bytes(model) -> bytes:
    """What `model.save_weights("x.weights.h5")` writes (model and optimizer variables),
    made in memory: `save_weights` takes a path only, and h5py writing to a full disk can
    crash the process; Keras' own H5IOStore takes an io.BytesIO (`saving_lib.H5IOStore`,
    `saving_lib._save_state`, as `save_weights_only` calls them)."""
    from keras.src.saving import saving_lib

    buffer = io.BytesIO()
    store = saving_lib.H5IOStore(buffer, mode="w")
    saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="",
                           visited_saveables=set())
    store.close()
    return buffer.getvalue()


def keras_file_bytes(model) -> bytes:
    """What `model.save("x.keras")` writes, made in memory (`saving_lib.save_model` takes a
    file object; `model.save` refuses one for its extension check)."""
    from keras.src.saving import saving_lib

    buffer = io.BytesIO()
    saving_lib.save_model(model, buffer)
    return buffer.getvalue()


def build_from_first_replica(model, first_local: Callable[[Any], Any]) -> None:
    """Makes `fit`/`evaluate` build `model` from the first replica's share of its first
    distributed batch (Keras 3.15's `Trainer._maybe_symbolic_build` reduces the batch across
    replicas, which fails for uneven shares and under several workers,
    keras-team/keras#20585; `_symbolic_build` is what it calls after)."""
    strategy = model.distribute_strategy

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            import tensorflow as tf

            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(first_local, next(it))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build


def patch_reduce_per_replica(wrap: Callable[[Callable], Callable]) -> None:
    """Replaces Keras' TensorFlow trainer's `reduce_per_replica` (a module function, how its
    step logs are reduced across replicas) by `wrap(original)`, once per process. Keras
    3.15 reduces scalar logs with `axis=0`, which fails under several workers."""
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer.reduce_per_replica, "bn_keras_patched", False):
        return
    patched = wrap(trainer.reduce_per_replica)
    patched.bn_keras_patched = True
    trainer.reduce_per_replica = patched


def misplaces_channels_first_bias(layer, output_shape) -> bool:
    """Whether Keras adds `layer`'s bias along the wrong axis: Keras 3.15 on TensorFlow
    adds a channels_first convolution's bias along the last axis when that axis has as
    many entries as the channel axis (keras/src/backend/tensorflow/numpy.py, around lines
    108-129; the JAX and PyTorch backends add it on the channel axis)."""
    import keras

    return (keras.config.backend() == "tensorflow"
            and getattr(layer, "data_format", None) == "channels_first"
            and len(output_shape) > 2 and output_shape[-1] == output_shape[1])


# ----------------------------------------------------------------------- TensorFlow
def in_xla_context() -> bool:
    """Whether the graph being traced will be compiled by XLA (`tf.function(jit_compile=
    True)`, Keras' jit_compile, TPUs). TensorFlow has no public test; tf-keras used this
    one (`control_flow_util.GraphOrParentsInXlaContext`)."""
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def disable_op_determinism() -> None:
    """Turns TensorFlow's op determinism off again if an earlier run in this process turned
    it on: TensorFlow offers `tf.config.experimental.enable_op_determinism()` only."""
    from tensorflow.python.framework import config

    if config.is_op_determinism_enabled():
        config.disable_op_determinism()


# ------------------------------------------------------------------------- checking
# (what, module, attribute path) of the names above that modules and classes hold; those
# only instances hold are checked on instances (_instances).
_NAMES = (
    ("graph_model_types", "keras.src.models.functional", "Functional"),
    ("flatten_layers", "keras", "Layer._flatten_layers"),
    ("keep_averages_apart", "keras", "optimizers.Optimizer.finalize_variable_values"),
    ("weights_h5_bytes", "keras.src.saving.saving_lib", "H5IOStore"),
    ("weights_h5_bytes", "keras.src.saving.saving_lib", "_save_state"),
    ("keras_file_bytes", "keras.src.saving.saving_lib", "save_model"),
    ("build_from_first_replica", "keras", "Model._maybe_symbolic_build"),
    ("build_from_first_replica", "keras", "Model._symbolic_build"),
    ("patch_reduce_per_replica", "keras.src.backend.tensorflow.trainer", "reduce_per_replica"),
    ("in_xla_context", "tensorflow.python.ops.control_flow_util",
     "GraphOrParentsInXlaContext"),
    ("disable_op_determinism", "tensorflow.python.framework.config",
     "is_op_determinism_enabled"),
    ("disable_op_determinism", "tensorflow.python.framework.config",
     "disable_op_determinism"),
)


def missing(tensorflow: bool | None = None) -> list[str]:
    """The private names above that the installed Keras (and TensorFlow, with `tensorflow`;
    by default where Keras runs on it) lacks, as "function: module.attribute" lines."""
    import keras

    if tensorflow is None:
        tensorflow = keras.config.backend() == "tensorflow"
    gone = []
    for what, module, path in _NAMES:
        if not tensorflow and "tensorflow" in module:
            continue
        try:
            value: Any = importlib.import_module(module)
            for part in path.split("."):
                value = getattr(value, part)
        except (ImportError, AttributeError):
            gone.append(f"{what}: {module}.{path}")
    gone += [f"{what}: {name}" for what, name in _instances() if name]
    return gone


def _instances() -> list[tuple[str, str | None]]:
    """Names only instances carry: a small functional model and an optimizer with `use_ema`,
    built; (what, the missing name or None)."""
    import keras

    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2)
    outputs = dense(inputs)
    optimizer = keras.optimizers.SGD(use_ema=True)
    optimizer.build(dense.trainable_variables)
    checks = [("producer", hasattr(outputs, "_keras_history")
               and producer(outputs) is dense, "KerasTensor._keras_history"),
              ("calls / consumers", len(calls(dense)) == 1, "Layer._inbound_nodes"),
              ("calls / consumers", hasattr(dense, "_outbound_nodes"), "Layer._outbound_nodes"),
              ("optimizer_averages", len(optimizer_averages(optimizer)) == 2,
               "Optimizer._trainable_variables")]
    return [(what, None if ok else name) for what, ok, name in checks]
