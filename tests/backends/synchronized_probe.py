"""Runs the synchronized-BN proof (bn_keras.testing.synchronized) on one Keras backend and
reports what it saw, as JSON.

tests/backends/test_synchronized.py starts it in a fresh process per backend, with
KERAS_BACKEND set (for JAX, XLA_FLAGS giving the CPU several devices), in a process group
of its own that the test kills at the end, so no replica outlives a failure. On JAX and
PyTorch TensorFlow is made unimportable first, as on a machine without it.

    KERAS_BACKEND=torch python tests/backends/synchronized_probe.py REQUEST.json REPORT.json

REQUEST.json: {"replicas": [2, 4], "train_replicas": [2]}: the replica counts of the
layer's proof and of LeNet's training step.
"""

import json
import os
import sys
import time
import warnings

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
if BACKEND != "tensorflow":
    sys.modules["tensorflow"] = None  # any import of TensorFlow now fails


def tensorflow(request):
    import tensorflow as tf

    # Before TensorFlow's runtime starts: one logical CPU per replica.
    replicas = max(request["replicas"] + request["train_replicas"])
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    from bn_keras.testing import synchronized as proof

    # One MirroredStrategy per process: a second one reuses the first's collective keys.
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:replicas]
    strategy = tf.distribute.MirroredStrategy(devices)
    layer = [proof.prove(split, proof.tensorflow_replicas(split, strategy))
             for split in proof.splits(replicas)]
    training = []
    if replicas in request["train_replicas"]:
        training.append(_trained("custom", replicas, proof.tensorflow_fit(
            "custom", replicas, strategy), proof.tensorflow_fit("custom", replicas)))
    return {"layer": layer, "training": training}


def jax(request):
    import jax
    import keras

    from bn_keras.testing import synchronized as proof

    devices = jax.devices()
    report = {"devices": len(devices), "layer": [], "training": [], "devices_used": {}}
    for replicas in request["replicas"]:
        for split in proof.splits(replicas, even_only=True):
            report["layer"].append(proof.prove(split, proof.jax_replicas(
                split, devices[:replicas])))
        report["devices_used"][replicas] = proof.jax_devices_used(
            proof.splits(replicas)[0], devices[:replicas])
    # A global batch of 7 on 2 devices: JAX shards a batch only evenly.
    import numpy as np

    odd = np.zeros((7, *proof.EXAMPLE_SHAPE), np.float32)
    distribution = keras.distribution.DataParallel(devices=devices[:2])
    try:
        keras.distribution.distribute_tensor(odd, distribution.get_data_layout(odd.shape))
        report["uneven_refused"] = None
    except ValueError as e:  # JAX's IndivisibleError
        report["uneven_refused"] = f"{type(e).__name__}: {e}"
    for replicas in request["train_replicas"]:
        for bn in ("custom", "keras"):
            report["training"].append(_trained(
                bn, replicas, proof.jax_fit(bn, replicas, devices[:replicas]),
                proof.jax_fit(bn, replicas)))
    return report


def torch(request):
    from bn_keras.testing import synchronized as proof

    report = {"layer": [], "training": [], "autograd_blind": {}}
    for replicas in request["replicas"]:
        train = replicas in request["train_replicas"]
        results = proof.torch_processes(replicas, torch_worker, replicas, train, timeout=300)
        for split in proof.splits(replicas):
            report["layer"].append(proof.prove(split, proof.combine(
                [r["layer"][split.name] for r in results])))
        split = proof.splits(replicas)[0]
        report["autograd_blind"][replicas] = proof.compare(
            proof.combine([r["blind"] for r in results]), proof.one_device(split))
        if train:
            for bn in ("custom", "keras"):
                observed = {name: [r["train"][bn][name][0] for r in results]
                            for name in results[0]["train"][bn]}
                report["training"].append(_trained(bn, replicas, observed,
                                                   proof.torch_train(bn, replicas, ddp=False)))
    return report


def torch_worker(replicas, train):
    """One torch.distributed process: its part of every split, the same with an all-reduce
    autograd does not see, and LeNet's training step under DDP."""
    import torch.distributed as dist

    from bn_keras import backends
    from bn_keras.testing import synchronized as proof

    result = {"layer": {split.name: proof.torch_replica(split)
                        for split in proof.splits(replicas)}}
    backend = backends.current()

    def autograd_blind_sum(t):  # the obvious mistake: the gradient stays local
        total = t.clone()
        dist.all_reduce(total)
        return total

    backend.sum_over_replicas = autograd_blind_sum
    try:
        with warnings.catch_warnings():  # PyTorch's warning that autograd cannot see it
            warnings.simplefilter("ignore", UserWarning)
            result["blind"] = proof.torch_replica(proof.splits(replicas)[0])
    finally:
        del backend.sum_over_replicas
    if train:
        result["train"] = {bn: proof.torch_train(bn, replicas) for bn in ("custom", "keras")}
    return result


def _trained(bn, replicas, observed, reference):
    from bn_keras.testing import synchronized as proof

    return {"bn": bn, "replicas": replicas, **proof.compare_weights(observed, reference)}


def main(request_path, report_path):
    with open(request_path) as f:
        request = json.load(f)
    start = time.monotonic()
    report = {"tensorflow": tensorflow, "jax": jax, "torch": torch}[BACKEND](request)
    report["backend"] = BACKEND
    report["seconds"] = time.monotonic() - start
    with open(report_path, "w") as f:
        json.dump(report, f, default=lambda value: value.item())  # NumPy scalars


if __name__ == "__main__":
    main(*sys.argv[1:3])
