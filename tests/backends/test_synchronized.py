"""Synchronized BN over N replicas equals one device on the concatenated batch, on every
backend, in one form (bn_keras.testing.synchronized): outputs, gradients of the input,
gamma and beta, moving statistics on every replica, inference; and LeNet's training
step, data-parallel, ending with one device's weights and statistics.

TensorFlow's 2 replicas run here, on the session's two logical CPUs (conftest.py). The
rest runs in a fresh process per backend (tests/backends/synchronized_probe.py), since
Keras picks its backend at import, JAX its device count at import, and TensorFlow its
logical devices before its runtime starts: TensorFlow with 4 replicas, JAX with 2 and 4
CPU devices under keras.distribution.DataParallel, PyTorch with 2 and 4 gloo processes.
Each probe runs in a process group of its own, killed when the test ends
(`scripts.run_group`), so no replica outlives a failure or a timeout.
"""

import json

import numpy as np
import pytest
from extras import extra_marks

from bn_keras.layers import BatchNormalization
from bn_keras.testing import synchronized as proof

# LeNet after 3 SGD steps (momentum 0.9, learning rate 0.1): float32 differences in the
# order of reductions grow through the steps (measured up to 6.5e-6 with 2 PyTorch
# processes); replicas each with their own statistics end 0.49 away.
TRAINING_TOLERANCE = 1e-4
# Per-replica statistics are this far, at least, from the global batch's on the proof's data.
LOCAL_DIFFERENCE = 0.5
# What each probe runs: the layer's replica counts, LeNet's, and its time limit.
REQUESTS = {
    "tensorflow": {"replicas": [4], "train_replicas": [4], "timeout": 300},
    "jax": {"replicas": [2, 4], "train_replicas": [2, 4], "timeout": 300},
    "torch": {"replicas": [2, 4], "train_replicas": [2], "timeout": 420},
}
# JAX: one process, its CPU split into as many devices as the most replicas asked for.
JAX_DEVICES = 4


@pytest.mark.parametrize("split", proof.splits(2), ids=lambda s: s.name)
def test_two_mirrored_replicas_equal_one_device(split, mirrored_strategy):
    result = proof.prove(split, proof.tensorflow_replicas(split, mirrored_strategy))
    assert result["passed"], result
    assert result["local_difference"] > LOCAL_DIFFERENCE, result


def test_unsynchronized_mirrored_replicas_keep_their_own_statistics(mirrored_strategy):
    """synchronized=False: each replica normalizes with its own part's statistics and keeps
    them, so replica 0's moving statistics (what a read gives) are its part's alone."""
    split = proof.splits(2)[1]
    observed = proof.tensorflow_replicas(split, mirrored_strategy, synchronized=False)
    own = proof.compare(observed, proof.local_statistics(split))
    assert own["train_output"] <= proof.TOLERANCE and own["grad_input"] <= proof.TOLERANCE
    local = proof.local_statistics(split)
    for statistics in ("moving_mean", "moving_variance"):
        for replica, value in enumerate(getattr(observed, statistics)):
            np.testing.assert_allclose(value, getattr(local, statistics)[replica], atol=1e-5)
    assert proof.compare(observed, proof.one_device(split))["train_output"] > LOCAL_DIFFERENCE


def test_ghost_batches_refuse_synchronized():
    """Ghost BN's groups are per replica by nature: synchronized=True is refused up front."""
    with pytest.raises(ValueError, match="`virtual_batch_size` cannot be combined with "
                                         "renorm=False or synchronized=True"):
        BatchNormalization(virtual_batch_size=4, synchronized=True)


def _run_probe(scripts, backend, request, directory):
    """The probe's report (scripts.run_group: its replicas die with it)."""
    (directory / "request.json").write_text(json.dumps(request))
    env = {"KERAS_BACKEND": backend}
    if backend == "jax":
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={JAX_DEVICES}"
    proc = scripts.run_group("tests/backends/synchronized_probe",
                             str(directory / "request.json"), str(directory / "report.json"),
                             env=env, timeout=request["timeout"])
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads((directory / "report.json").read_text())


@pytest.fixture(scope="module", params=[
    pytest.param("tensorflow", marks=pytest.mark.proof),  # multi-process: CI's 2nd stage
    pytest.param("jax", marks=extra_marks("backends", "jax")),
    pytest.param("torch", marks=extra_marks("backends", "torch")),
])
def probe(request, tmp_path_factory, scripts):
    backend = request.param
    report = _run_probe(scripts, backend, REQUESTS[backend],
                        tmp_path_factory.mktemp(f"synchronized_{backend}"))
    assert report["backend"] == backend
    return report


@pytest.mark.slow
@pytest.mark.multiprocess
def test_replicas_equal_one_device_on_every_backend(probe):
    backend, request = probe["backend"], REQUESTS[probe["backend"]]
    expected = [(s.name, s.replicas) for n in request["replicas"]
                for s in proof.splits(n, even_only=backend == "jax")]
    assert [(r["split"], r["replicas"]) for r in probe["layer"]] == expected
    for result in probe["layer"]:
        assert result["passed"], result
        assert result["local_difference"] > LOCAL_DIFFERENCE, result


@pytest.mark.slow
@pytest.mark.multiprocess
def test_data_parallel_training_ends_with_one_devices_weights(probe):
    """Ours, synchronized, on every backend; Keras' own BN under JAX's DataParallel too (its
    statistics are global there); Keras' under PyTorch's DDP is not (each process keeps its
    own statistics, as DDP's broadcast_buffers does not reach Keras' variables)."""
    backend, request = probe["backend"], REQUESTS[probe["backend"]]
    trained = {(t["bn"], t["replicas"]): t for t in probe["training"]}
    bns = ["custom"] if backend == "tensorflow" else ["custom", "keras"]
    assert sorted(trained) == sorted((bn, n) for bn in bns for n in request["train_replicas"])
    for (bn, _), result in trained.items():
        if backend == "torch" and bn == "keras":
            assert result["between_replicas"] > 1e-2, result
            assert result["weights"] > LOCAL_DIFFERENCE / 5, result
            continue
        assert result["weights"] <= TRAINING_TOLERANCE, result
        assert result["moving_statistics"] <= TRAINING_TOLERANCE, result
        assert result["between_replicas"] == 0.0, result


@pytest.mark.slow
@pytest.mark.multiprocess
def test_backend_specific_facts(probe):
    """PyTorch: an all-reduce autograd does not see gives the input wrong gradients (the
    statistics right). JAX: the step runs on every device; an odd batch is refused."""
    if probe["backend"] == "torch":
        for blind in probe["autograd_blind"].values():
            assert blind["grad_input"] > 0.05, blind
            assert blind["train_output"] <= proof.TOLERANCE, blind
    elif probe["backend"] == "jax":
        assert probe["devices"] == JAX_DEVICES
        assert probe["devices_used"] == {str(n): n for n in REQUESTS["jax"]["replicas"]}
        assert probe["uneven_refused"].startswith("IndivisibleError"), probe["uneven_refused"]
