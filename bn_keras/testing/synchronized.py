"""Evidence that synchronized BN over N replicas equals one device on the concatenated batch.

One form on every backend. The same batches run once on one device and once split
among N replicas, and everything a user can observe is compared: the training output
and the input's gradient (the replicas' parts concatenated), the gradients of gamma
and beta (the replicas' summed, as a data-parallel trainer sums them), the moving
statistics after a few steps (on every replica) and the inference output. Each
replica's part of a batch has its own per-channel offset and spread, so statistics
computed per replica would differ from the global ones: `local_difference` measures by
how much, which shows that the data could tell the two apart.

How replicas run is the backend's:

- TensorFlow: a `tf.distribute.MirroredStrategy` over logical CPUs
  (`tensorflow_replicas`); a replica may hold any number of examples.
- PyTorch: the processes of one torch.distributed group (`torch_processes` starts them,
  `torch_replica` runs inside each); any number of examples each.
- JAX: `keras.distribution.DataParallel` over several devices (`jax_replicas`): one
  program over the global batch, sharded along it, where XLA inserts the reductions.
  The layer's `synchronized` does nothing there (`replicas_in_sync()` is 1): the
  statistics are global because the program is. JAX refuses a batch that the devices
  do not divide evenly.

Then the full training step (`lenet_batches`; `tensorflow_fit`, `jax_fit`,
`torch_train`): LeNet with our BN trained a few steps, data-parallel, against one device
on the concatenated batches: every weight, and every replica's moving statistics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from bn_keras.layers import BatchNormalization
from bn_keras.testing import equivalence, layer_steps

QUANTITIES = ("train_output", "grad_input", "grad_gamma", "grad_beta", "moving_mean",
              "moving_variance", "infer_output")
# The grid's float32 tolerance (bn_keras.testing.equivalence), on scaled differences.
TOLERANCE = equivalence.TOLERANCES["float32"]
EXAMPLE_SHAPE = (5, 7)  # each example: 5 positions of 7 channels
STEPS = 3
MOMENTUM = 0.5  # the moving statistics move far in a few steps


@dataclasses.dataclass(frozen=True)
class Split:
    """How one global batch is split among replicas: `sizes[r]` examples on replica r."""

    sizes: tuple[int, ...]

    @property
    def replicas(self) -> int:
        return len(self.sizes)

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def even(self) -> bool:
        return len(set(self.sizes)) == 1

    @property
    def name(self) -> str:
        return "+".join(map(str, self.sizes))

    def part(self, replica: int) -> slice:
        """Replica `replica`'s examples in the global batch."""
        start = sum(self.sizes[:replica])
        return slice(start, start + self.sizes[replica])


# 2 and 4 replicas, each evenly and unevenly (one replica with a single example).
SPLITS = (Split((4, 4)), Split((3, 5)), Split((2, 2, 2, 2)), Split((1, 3, 2, 4)))


def splits(replicas: int, even_only: bool = False) -> list[Split]:
    """The proof's splits among `replicas` replicas (`even_only`: for JAX)."""
    return [s for s in SPLITS if s.replicas == replicas and (s.even or not even_only)]


@dataclasses.dataclass(frozen=True)
class Data:
    """The global batches of a few training steps, the loss weights, the initial weights."""

    batches: list[np.ndarray]
    projection: np.ndarray  # loss = sum(y * projection): every output element matters
    weights: list[np.ndarray]  # gamma, beta, moving_mean, moving_variance


def make_data(split: Split, seed: int = 0) -> Data:
    """`STEPS` global batches for `split`; each replica's part with its own per-channel
    offset and spread."""
    rng = np.random.default_rng(seed)
    channels = EXAMPLE_SHAPE[-1]
    batches = []
    for _ in range(STEPS):
        parts = []
        for size in split.sizes:
            offset = rng.normal(size=channels) * 3
            spread = rng.uniform(0.5, 3.0, size=channels)
            parts.append(rng.normal(size=(size, *EXAMPLE_SHAPE)) * spread + offset)
        batches.append(np.concatenate(parts).astype(np.float32))
    projection = rng.normal(size=(split.total, *EXAMPLE_SHAPE)).astype(np.float32)
    weights = [rng.uniform(0.5, 1.5, channels).astype(np.float32) for _ in range(4)]
    return Data(batches, projection, weights)


@dataclasses.dataclass
class Observation:
    """What a user sees of the layer: first step's output and gradients, inference after
    the last step, and the moving statistics of each replica (one, on one device)."""

    train_output: np.ndarray
    grad_input: np.ndarray
    grad_gamma: np.ndarray
    grad_beta: np.ndarray
    infer_output: np.ndarray
    moving_mean: list[np.ndarray]
    moving_variance: list[np.ndarray]


def make_layer(data: Data, synchronized: bool = True) -> BatchNormalization:
    """Our layer, built and holding `data`'s initial weights."""
    layer = BatchNormalization(momentum=MOMENTUM, synchronized=synchronized)
    layer.build((None, *EXAMPLE_SHAPE))
    layer.set_weights(data.weights)
    return layer


def observe(layer: BatchNormalization, batches: Sequence[Any], projection: Any,
            compiled: bool = False,
            statistics: Callable[[], tuple[list, list]] | None = None) -> Observation:
    """Runs `layer` through the proof's steps on `batches` (one replica's parts, or whole
    batches), on the backend's harness; `statistics()` reads each replica's moving
    statistics (default: the layer's own)."""
    step = layer_steps.train_step(layer, compiled=compiled)
    y, grads = step(batches[0], projection)
    for batch in batches[1:]:
        step(batch, projection)
    infer = layer_steps.infer_step(layer, compiled=compiled)(batches[-1])
    if statistics is None:
        def statistics():
            return [layer.moving_mean], [layer.moving_variance]
    means, variances = statistics()
    return Observation(
        train_output=_numpy(y), grad_input=_numpy(grads["input"]),
        grad_gamma=_numpy(grads["gamma"]), grad_beta=_numpy(grads["beta"]),
        infer_output=_numpy(infer), moving_mean=[_numpy(m) for m in means],
        moving_variance=[_numpy(v) for v in variances])


def one_device(split: Split, seed: int = 0) -> Observation:
    """The reference: one device, the whole batches, on the backend Keras runs on."""
    data = make_data(split, seed)
    return observe(make_layer(data), data.batches, data.projection)


def local_statistics(split: Split, seed: int = 0) -> Observation:
    """What replicas each normalizing with their own part's statistics would give (each
    part on one device, combined): what the proof must be able to tell apart."""
    data = make_data(split, seed)
    return combine([observe(make_layer(data), [b[split.part(r)] for b in data.batches],
                            data.projection[split.part(r)]) for r in range(split.replicas)])


def combine(parts: Sequence[Observation]) -> Observation:
    """The replicas' own observations as one: outputs and input gradients concatenated,
    gamma's and beta's gradients summed, each replica's moving statistics kept."""
    def concatenated(name):
        return np.concatenate([getattr(p, name) for p in parts])

    def summed(name):
        return np.sum([getattr(p, name) for p in parts], axis=0)

    return Observation(
        train_output=concatenated("train_output"), grad_input=concatenated("grad_input"),
        grad_gamma=summed("grad_gamma"), grad_beta=summed("grad_beta"),
        infer_output=concatenated("infer_output"),
        moving_mean=[m for p in parts for m in p.moving_mean],
        moving_variance=[v for p in parts for v in p.moving_variance])


def compare(observed: Observation, reference: Observation) -> dict[str, float]:
    """The scaled difference (equivalence.scaled_difference) of each quantity from the
    reference, the moving statistics' the worst over the replicas; `replicas_agree`: the
    largest difference between two replicas' moving statistics."""
    result = {}
    for name in QUANTITIES:
        actual, expected = getattr(observed, name), getattr(reference, name)
        if isinstance(actual, list):
            result[name] = max(equivalence.scaled_difference(a, expected[0]) for a in actual)
        else:
            result[name] = equivalence.scaled_difference(actual, expected)
    result["between_replicas"] = max(
        equivalence.scaled_difference(s, getattr(observed, name)[0])
        for name in ("moving_mean", "moving_variance") for s in getattr(observed, name))
    return result


def passes(differences: dict[str, float]) -> bool:
    """Every quantity within TOLERANCE of one device, and every replica the same."""
    return all(differences[q] <= TOLERANCE for q in (*QUANTITIES, "between_replicas"))


def prove(split: Split, observed: Observation, seed: int = 0) -> dict[str, Any]:
    """`observed` (the replicas' combined observation of `split`) against one device:
    the differences, the verdict, and how far per-replica statistics would have been."""
    reference = one_device(split, seed)
    differences = compare(observed, reference)
    local = compare(local_statistics(split, seed), reference)
    return {"split": split.name, "replicas": split.replicas, "even": split.even,
            "differences": differences, "absolute": absolute_differences(observed, reference),
            "passed": passes(differences),
            "local_difference": max(local[q] for q in QUANTITIES)}


def absolute_differences(observed: Observation, reference: Observation) -> dict[str, float]:
    """max|observed - reference| of each quantity (the moving statistics': every replica's)."""
    def largest(actual, expected):
        return float(np.max(np.abs(actual.astype(np.float64) - expected)))

    result = {}
    for name in QUANTITIES:
        actual, expected = getattr(observed, name), getattr(reference, name)
        result[name] = (max(largest(a, expected[0]) for a in actual)
                        if isinstance(actual, list) else largest(actual, expected))
    return result


# ------------------------------------------------------------------ TensorFlow
def tensorflow_replicas(split: Split, strategy, seed: int = 0,
                        synchronized: bool = True) -> Observation:
    """`split` run by the replicas of a tf.distribute `strategy` (one per part), each
    step through the harness inside `strategy.run`."""
    import tensorflow as tf

    if strategy.num_replicas_in_sync != split.replicas:
        raise ValueError(f"the strategy has {strategy.num_replicas_in_sync} replicas; the "
                         f"split {split.name} needs {split.replicas}.")
    data = make_data(split, seed)
    with strategy.scope():
        layer = make_layer(data, synchronized)
    step = layer_steps.train_step(layer)

    def per_replica(t):
        return strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(t[split.part(context.replica_id_in_sync_group)]))

    def local(value):
        return [_numpy(t) for t in strategy.experimental_local_results(value)]

    projection = per_replica(data.projection)
    y, grads = strategy.run(step, args=(per_replica(data.batches[0]), projection))
    for batch in data.batches[1:]:
        strategy.run(step, args=(per_replica(batch), projection))
    infer = strategy.run(lambda x: layer(x, training=False),
                         args=(per_replica(data.batches[-1]),))
    means, variances = local(layer.moving_mean.value), local(layer.moving_variance.value)
    parts = [Observation(*values, moving_mean=[m], moving_variance=[v]) for values, m, v in
             zip(zip(local(y), local(grads["input"]), local(grads["gamma"]),
                     local(grads["beta"]), local(infer), strict=True),
                 means, variances, strict=True)]
    return combine(parts)


# ------------------------------------------------------------------ PyTorch
def torch_replica(split: Split, seed: int = 0, synchronized: bool = True) -> Observation:
    """This process's part of `split`, inside a torch.distributed group of one process
    per part (rank r holds part r); combine the ranks' results with `combine`."""
    import torch.distributed as dist

    if dist.get_world_size() != split.replicas:
        raise ValueError(f"{dist.get_world_size()} processes; the split {split.name} needs "
                         f"{split.replicas}.")
    data = make_data(split, seed)
    part = split.part(dist.get_rank())
    return observe(make_layer(data, synchronized), [b[part] for b in data.batches],
                   data.projection[part])


def torch_processes(world_size: int, target: Callable[..., Any], *args: Any,
                    timeout: float = 600, backend: str = "gloo") -> list[Any]:
    """`target(*args)` in each of `world_size` new processes forming one torch.distributed
    group; their results (picklable) in rank order.

    The processes start with `torch.multiprocessing` ("spawn": `target` must be a
    module's top-level function) and meet through a file store in a temporary
    directory, so no port is needed; each takes its share of the CPU's cores
    (torch.set_num_threads), since PyTorch's OpenMP threads collapse when they outnumber
    the cores. A process that fails stops the others, and so does the `timeout`.
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as directory:
        context = mp.start_processes(_torch_process, args=(world_size, directory, backend,
                                                           timeout, target, args),
                                     nprocs=world_size, join=False, start_method="spawn")
        deadline = time.monotonic() + timeout
        try:
            while not context.join(timeout=1):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{world_size} torch.distributed processes were not "
                                       f"done after {timeout:g} s")
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
                    process.join()
        results = []
        for rank in range(world_size):
            with open(os.path.join(directory, f"{rank}.pickle"), "rb") as f:
                results.append(pickle.load(f))
        return results


def _torch_process(rank: int, world_size: int, directory: str, backend: str,
                   timeout: float, target: Callable[..., Any], args: tuple) -> None:
    import datetime

    import torch
    import torch.distributed as dist

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    # A collective waits at most `timeout` for a process that died (gloo's default: 30 min).
    dist.init_process_group(backend, init_method=f"file://{directory}/store", rank=rank,
                            world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout))
    try:
        result = target(*args)
        with open(os.path.join(directory, f"{rank}.pickle"), "wb") as f:
            pickle.dump(result, f)
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------ JAX
def jax_replicas(split: Split, devices: Sequence[Any], seed: int = 0) -> Observation:
    """`split` run under keras.distribution.DataParallel over `devices`: the global batch
    sharded along its first axis, one device per part, the harness's step jitted over
    it. Even splits only (JAX refuses uneven shards)."""
    if len(devices) != split.replicas or not split.even:
        raise ValueError(f"DataParallel over {len(devices)} devices shards a batch evenly; "
                         f"the split {split.name} cannot be run there.")
    data = make_data(split, seed)
    distribution = keras.distribution.DataParallel(devices=list(devices))
    with distribution.scope():
        layer = make_layer(data)

        def sharded(t):
            return keras.distribution.distribute_tensor(
                t, distribution.get_data_layout(t.shape))

        observed = observe(layer, [sharded(b) for b in data.batches],
                           sharded(data.projection), compiled=True,
                           statistics=lambda: (_shards(layer.moving_mean),
                                               _shards(layer.moving_variance)))
    return observed


def jax_devices_used(split: Split, devices: Sequence[Any], seed: int = 0) -> int:
    """How many devices the jitted training step's output spans under DataParallel (the
    proof's step runs where the data are, not on one device)."""
    data = make_data(split, seed)
    distribution = keras.distribution.DataParallel(devices=list(devices))
    with distribution.scope():
        layer = make_layer(data)
        x = keras.distribution.distribute_tensor(
            data.batches[0], distribution.get_data_layout(data.batches[0].shape))
        y, _ = layer_steps.train_step(layer, compiled=True)(x, data.projection)
    return len(y.sharding.device_set)


def _shards(variable) -> list[np.ndarray]:
    """Each device's copy of a (replicated) JAX variable."""
    return [np.asarray(shard.data) for shard in variable.value.addressable_shards]


# ------------------------------------------------------------------ the training step
TRAIN_STEPS = 3
TRAIN_BATCH = 16  # global: 8 per replica with 2, 4 with 4
LEARNING_RATE = 0.1
SGD_MOMENTUM = 0.9


def lenet_batches(replicas: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-shaped images and labels for TRAIN_STEPS global batches of TRAIN_BATCH, each
    replica's part of each batch brighter or darker than the others'."""
    rng = np.random.default_rng(seed)
    images = TRAIN_STEPS * TRAIN_BATCH
    x = rng.normal(size=(images, 32, 32, 3)).astype(np.float32)
    per_part = TRAIN_BATCH // replicas
    offsets = rng.normal(size=(images // per_part, 1, 1, 3)) * 2
    x += np.repeat(offsets, per_part, axis=0).astype(np.float32)
    return x, rng.integers(0, 10, images).astype(np.int32)


def lenet(bn: str) -> keras.Model:
    """LeNet (bn_keras.models.lenet_cifar) with BN "custom" (ours, synchronized) or
    "keras", the same initial weights every time."""
    from bn_keras import models

    keras.utils.set_random_seed(0)
    return models.lenet_cifar(bn, **({"synchronized": True} if bn == "custom" else {}))


def model_weights(model: keras.Model,
                  copies: Callable[[Any], list[np.ndarray]] | None = None
                  ) -> dict[str, list[np.ndarray]]:
    """Every variable of `model` by path, as each replica holds it (`copies(variable)`;
    default: the one value)."""
    copies = copies or (lambda v: [_numpy(v)])
    return {v.path: copies(v) for v in model.weights}


def compare_weights(observed: dict[str, list[np.ndarray]],
                    reference: dict[str, list[np.ndarray]]) -> dict[str, float]:
    """The largest scaled difference from one device of the trained weights and of the
    moving statistics (every replica's), and the largest between two replicas'
    statistics."""
    def worst(names, against):
        return max(equivalence.scaled_difference(copy, against(name))
                   for name in names for copy in observed[name])

    statistics = [n for n in observed if n.endswith(("moving_mean", "moving_variance"))]
    trained = [n for n in observed if n not in statistics]
    return {"weights": worst(trained, lambda n: reference[n][0]),
            "moving_statistics": worst(statistics, lambda n: reference[n][0]),
            "between_replicas": worst(statistics, lambda n: observed[n][0])}


def jax_fit(bn: str, replicas: int, devices: Sequence[Any] | None = None
            ) -> dict[str, list[np.ndarray]]:
    """LeNet trained TRAIN_STEPS steps with `fit` (SGD with momentum, batches in order) on
    `lenet_batches(replicas)`, under keras.distribution.DataParallel over `devices`
    (None: one device); its weights as each device holds them."""
    x, y = lenet_batches(replicas)
    initial = lenet(bn).get_weights()  # the same start, whatever the distribution
    distribution = (keras.distribution.DataParallel(devices=list(devices)) if devices
                    else None)
    with distribution.scope() if distribution else contextlib.nullcontext():
        model = _compiled_lenet(bn, initial)
        model.fit(x, y, batch_size=TRAIN_BATCH, epochs=1, shuffle=False, verbose=0)
    return model_weights(model, _shards if devices else None)


def _compiled_lenet(bn: str, initial: list[np.ndarray]) -> keras.Model:
    """`lenet(bn)` holding the weights `initial`, compiled for the proof's SGD steps."""
    model = lenet(bn)
    model.set_weights(initial)
    model.compile(keras.optimizers.SGD(LEARNING_RATE, momentum=SGD_MOMENTUM),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def tensorflow_fit(bn: str, replicas: int, strategy=None) -> dict[str, list[np.ndarray]]:
    """`jax_fit` on TensorFlow: under the tf.distribute `strategy` (None: one device); the
    weights as each replica holds them."""
    x, y = lenet_batches(replicas)
    initial = lenet(bn).get_weights()
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = _compiled_lenet(bn, initial)
    model.fit(x, y, batch_size=TRAIN_BATCH, epochs=1, shuffle=False, verbose=0)
    if strategy is None:
        return model_weights(model)
    return model_weights(model, lambda v: [
        _numpy(t) for t in strategy.experimental_local_results(v.value)])


def torch_train(bn: str, replicas: int, ddp: bool = True) -> dict[str, list[np.ndarray]]:
    """LeNet trained TRAIN_STEPS steps with a plain PyTorch loop (torch.optim.SGD with
    momentum, cross-entropy), as keras.io's multi-GPU PyTorch guide writes it: with
    `ddp`, inside a torch.distributed group, this process's part of each global batch
    through DistributedDataParallel around the Keras model (`replicas` processes); without,
    the whole batches of `lenet_batches(replicas)` in one process. Returns this process's
    weights."""
    import torch
    import torch.distributed as dist

    world, rank = (dist.get_world_size(), dist.get_rank()) if ddp else (1, 0)
    if ddp and world != replicas:
        raise ValueError(f"{world} processes; {replicas} replicas asked for.")
    x, y = lenet_batches(replicas)
    model = lenet(bn)
    trained = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                lr=LEARNING_RATE, momentum=SGD_MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()
    per_replica = TRAIN_BATCH // world
    for step in range(TRAIN_STEPS):
        start = step * TRAIN_BATCH + rank * per_replica
        images = torch.as_tensor(x[start:start + per_replica])
        labels = torch.as_tensor(y[start:start + per_replica], dtype=torch.long)
        # DDP averages the processes' gradients: with equal parts, the global mean loss's.
        loss = loss_fn(trained(images, training=True), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model_weights(model)


def _numpy(t) -> np.ndarray:
    if hasattr(t, "detach"):  # a torch tensor that may require grad
        t = t.detach()
    return np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float32)
