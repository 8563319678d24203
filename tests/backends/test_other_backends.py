"""Our layer and models on JAX and PyTorch, each against that backend's built-in.

Keras picks its backend when it is imported, so each backend runs in its own
process (tests/backends/backend_probe.py, with TensorFlow made unimportable, as on a
machine without it), and the tests here assert on what it reports. They skip
where the backend is not installed: `pip install -e ".[test,backends]"`.

CI time: the full equivalence grid runs on TensorFlow (tests/layers/test_batch_normalization.py);
here a representative subset of it runs on each of JAX and PyTorch, the
SUBSET below: 2-D with batch 1 (PyTorch's kernel refuses it: our general path
takes it) and 64, 3-D channels-last and channels-first, a mask, NHWC with few
channels, NCHW, offset 1e4 (inference also with converged statistics) and constant
inputs (where Keras' PyTorch layer gives NaN or loses precision), mixed float16 and
bfloat16, synchronized=True (Keras' layer refuses it off TensorFlow), no center/scale,
and renorm.
"""

import importlib.util
import json

import keras
import numpy as np
import pytest

from bn_keras import models
from bn_keras.testing import equivalence, tools_grid

SUBSET = ["1x120 axis=-1", "64x120 axis=-1", "32x126x64 axis=-1", "16x64x126 axis=1",
          "16x126x64 axis=-1 masked", "64x28x28x6 axis=-1", "16x16x10x10 axis=1",
          "16x28x28x6 axis=-1 offset=10000", "16x28x28x6 axis=-1 offset=10000 converged",
          "16x28x28x6 axis=-1 constant",
          "16x10x10x16 axis=-1 mixed_float16", "16x10x10x16 axis=-1 mixed_bfloat16",
          "16x10x10x16 axis=-1 synchronized=True",
          "16x10x10x16 axis=-1 center=False scale=False",
          "64x120 axis=-1 renorm=True renorm_clipping=(('rmax', 3.0), ('dmax', 5.0))"]
GHOST_BATCH, GHOST_GROUP_SIZE = 14, 4  # groups of 4, 4, 4 and 2
FIT_MODELS = ["lenet", "lenet_tutorial", "resnet20"]  # resnet20: ZeroPadShortcut
# A process per backend, ~80 s each; each backend's tests skip where it is not installed.
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess, pytest.mark.extra]


@pytest.fixture(scope="module", params=["jax", "torch"])
def probe(request, tmp_path_factory, scripts):
    """The probe's report on one backend, and the TensorFlow side of the .keras exchange."""
    backend = request.param
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"needs {backend}: pip install -e '.[backends]'")
    tmp = tmp_path_factory.mktemp(backend)
    images = np.random.default_rng(3).normal(size=(8, 32, 32, 3)).astype(np.float32)
    np.save(tmp / "images.npy", images)
    # A model trained here, on TensorFlow, with synchronized BN, as one from several replicas.
    keras.utils.set_random_seed(0)
    model = models.lenet_cifar("custom", synchronized=True)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, np.arange(8) % 10, batch_size=8, verbose=0)
    model.save(tmp / "from_tensorflow.keras")
    request_json = {"cases": SUBSET, "ghost_batch": GHOST_BATCH,
                    "ghost_group_size": GHOST_GROUP_SIZE, "fit_models": FIT_MODELS,
                    "fit_images": 16, "images": str(tmp / "images.npy"),
                    "load": str(tmp / "from_tensorflow.keras"),
                    "save": str(tmp / f"from_{backend}.keras")}
    (tmp / "request.json").write_text(json.dumps(request_json))
    proc = scripts.run("tests/backends/backend_probe", str(tmp / "request.json"),
                       str(tmp / "report.json"), env={"KERAS_BACKEND": backend}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    report = json.loads((tmp / "report.json").read_text())
    assert report["backend"] == backend
    return {"report": report, "images": images, "tmp": tmp,
            "tensorflow_predictions": model.predict(images, verbose=0)}


def test_backend_keeps_the_contract(probe):
    """bn_keras.testing.conformance ran in the probe; it raises at the first breach."""
    contract = probe["report"]["contract"]
    assert contract["name"] == probe["report"]["backend"]
    assert contract["replicas"] == {"replicas_in_sync": 1}
    kernels = set(contract["kernels"].values())
    # PyTorch has a kernel; JAX leaves everything to XLA's fusion of the general path.
    assert kernels == ({"_Kernel"} if contract["name"] == "torch" else {"general path"})
    assert "repeat and infer_step" in contract["steps"]
    assert contract["steps"]["xla"] == ("equals the step without XLA" if contract["name"] == "jax"
                                        else "refused: no XLA on Keras' torch backend (use "
                                        "tensorflow or jax).")


def test_equivalence_subset_passes(probe):
    results = probe["report"]["grid"]
    assert [r["case"] for r in results] == SUBSET
    failed = [r for r in results if not (r["passed"] and r["config_roundtrip"])]
    assert not failed, failed
    for r in results:
        beyond = [q for q in equivalence.QUANTITIES if (r[q] or 0.0) > r["tolerance"]]
        if beyond:  # only ill-conditioned inputs, where ours is the more accurate
            assert r["ours_vs_exact"] is not None, (beyond, r)
            assert r["ours_vs_exact"] <= equivalence.ROUNDING_ALLOWANCE * r["keras_vs_exact"], r


def test_ghost_bn_on_a_batch_the_group_size_does_not_divide(probe):
    ghost = probe["report"]["ghost"]
    expected, moving_mean, moving_variance = equivalence.numpy_ghost_batch_norm(
        np.array(ghost["x"]), GHOST_GROUP_SIZE, momentum=0.5)
    np.testing.assert_allclose(ghost["y"], expected, atol=2e-5)
    np.testing.assert_allclose(ghost["moving_mean"], moving_mean, atol=1e-5)
    np.testing.assert_allclose(ghost["moving_variance"], moving_variance, atol=1e-5)


def test_synchronized_runs_as_plain_bn_on_one_device(probe):
    report = probe["report"]["synchronized"]
    assert report["max_output_difference"] == 0.0
    assert report["max_variance_difference"] == 0.0


def test_models_train_with_plain_fit(probe):
    losses = probe["report"]["fit_losses"]
    assert sorted(losses) == sorted(FIT_MODELS)
    for name, history in losses.items():
        assert len(history) == 2 and np.all(np.isfinite(history)), (name, history)


def test_keras_files_cross_backends(probe):
    """Saved on TensorFlow, loaded there; saved there, loaded on TensorFlow: same predictions."""
    saved = probe["report"]["saved"]
    np.testing.assert_allclose(saved["loaded_predictions"], probe["tensorflow_predictions"],
                               atol=1e-4, rtol=1e-4)
    assert np.all(np.isfinite(saved["loaded_fit_loss"]))
    backend = probe["report"]["backend"]
    # compile=False: the file's optimizer is the other backend's class, and importing Keras'
    # torch backend into this TensorFlow process crashes it (torch and TensorFlow collide).
    loaded = keras.models.load_model(probe["tmp"] / f"from_{backend}.keras", compile=False)
    assert all(layer.synchronized for layer in loaded.layers if hasattr(layer, "synchronized"))
    np.testing.assert_allclose(loaded.predict(probe["images"], verbose=0),
                               saved["saved_predictions"], atol=1e-4, rtol=1e-4)


def test_bn_tools_recalibrate_and_fold(probe):
    """The same checks as tests/layers/test_recalibration.py and tests/layers/test_folding.py."""
    tools = probe["report"]["tools"]
    errors = dict(tools["recalibration_errors"])
    assert errors.pop("other_weights") == 0.0 and errors.pop("frozen_bn") == 0.0
    assert len(errors) == 6 and max(errors.values()) < 1e-5, errors
    assert tools["folding_error"] <= 1e-4


def test_bn_tools_grid(probe):
    """The tools' whole grid (tests/layers/test_tools_grid.py on TensorFlow): every case,
    for our BN and Keras', folded, re-estimated (both conventions) and frozen against
    references apart from the tools' code."""
    rows = probe["report"]["tools"]["grid"]
    assert len(rows) == 2 * len(tools_grid.default_grid()) - 1  # Ghost BN: ours only
    failing = [(r["case"], r["bn"]) for r in rows if not r["passed"]]
    assert failing == [], failing
    # channels_first with the last axis as long as the channels: Keras adds the bias on
    # the channel axis here (on TensorFlow it does not, and the BN is kept there).
    row = next(r for r in rows if r["case"] == "channels_first, axis=1, last axis = filters")
    assert row["folded"] == 1
