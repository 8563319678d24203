"""Runs our layer and models on one Keras backend and reports what it saw, as JSON.

tests/backends/test_other_backends.py starts it in a fresh process per backend (Keras picks
its backend at import) with KERAS_BACKEND set, and asserts on the report.
TensorFlow is made unimportable first, as on a machine without it: nothing
here, in the layer or in the models may need it on JAX or PyTorch.

    KERAS_BACKEND=jax python tests/backends/backend_probe.py REQUEST.json REPORT.json
"""

import json
import sys

sys.modules["tensorflow"] = None  # any import of TensorFlow now fails

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bn_keras import backends, models  # noqa: E402
from bn_keras.layers import BatchNormalization  # noqa: E402
from bn_keras.testing import (  # noqa: E402
    bn_tools,
    conformance,
    equivalence,
    harness,
    tools_grid,
)


def grid(case_names):
    by_name = {case.name: case for case in equivalence.default_grid()}
    return [equivalence.compare(by_name[name]) for name in case_names]


def ghost(batch, group_size, seed=0):
    """Our Ghost BN output and moving statistics on a (batch, 5, 7) input."""
    x = (np.random.default_rng(seed).normal(size=(batch, 5, 7)) * 3 + 1).astype(np.float32)
    layer = BatchNormalization(virtual_batch_size=group_size, momentum=0.5)
    y = layer(x, training=True)
    return {"x": x.tolist(), "y": keras.ops.convert_to_numpy(y).tolist(),
            "moving_mean": keras.ops.convert_to_numpy(layer.moving_mean).tolist(),
            "moving_variance": keras.ops.convert_to_numpy(layer.moving_variance).tolist()}


def synchronized():
    """synchronized=True on one device: the same outputs and statistics as without. (Several
    replicas: tests/backends/test_synchronized.py.)"""
    x = np.random.default_rng(1).normal(size=(8, 6, 6, 16)).astype(np.float32) * 2 + 1
    results = {}
    for sync in (True, False):
        layer = BatchNormalization(synchronized=sync, momentum=0.5)
        y = keras.ops.convert_to_numpy(layer(x, training=True))
        results[sync] = (y, keras.ops.convert_to_numpy(layer.moving_variance))
    report = {"max_output_difference": float(np.max(np.abs(results[True][0] - results[False][0]))),
              "max_variance_difference": float(np.max(np.abs(results[True][1]
                                                              - results[False][1])))}
    return report


def fit_models(names, images):
    """Each model built with our BN and trained with a plain fit; returns the epoch losses."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(images, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, images)
    losses = {}
    for name in names:
        keras.utils.set_random_seed(0)
        model = models.build_model(name, "custom")
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(x, y, batch_size=images // 2, epochs=2, verbose=0)
        losses[name] = history.history["loss"]
    return losses


def saved_models(request):
    """Loads the .keras file another backend saved and predicts; saves one of our own."""
    x = np.load(request["images"])
    loaded = keras.models.load_model(request["load"])
    report = {"loaded_predictions": keras.ops.convert_to_numpy(loaded.predict(x, verbose=0))
              .tolist()}
    # The loaded model (synchronized=True, from several replicas) also trains here.
    loaded.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    report["loaded_fit_loss"] = loaded.fit(x, np.arange(len(x)) % 10, verbose=0).history["loss"]
    keras.utils.set_random_seed(1)
    model = models.lenet_cifar("custom", synchronized=True)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.arange(len(x)) % 10, batch_size=len(x), verbose=0)
    model.save(request["save"])
    report["saved_predictions"] = keras.ops.convert_to_numpy(model.predict(x, verbose=0)).tolist()
    return report


def tools():
    """recalibrate_batch_norm against the NumPy reference, and fold_batch_norm's error, on
    the model holding every kind of BN layer (bn_keras.testing.bn_tools); and the tools'
    whole grid (bn_keras.testing.tools_grid), as experiments/validate_tools.py runs it."""
    data = bn_tools.batches(3, 16, last=6)
    model = bn_tools.tools_model()
    report = {"recalibration_errors": bn_tools.recalibration_errors(model, data)}
    report["folding_error"] = bn_tools.folding_error(model, data[0])
    report["grid"] = [tools_grid.check(case, bn) for bn in tools_grid.BN_CLASSES
                      for case in tools_grid.grid_for(bn)]
    return report


def main(request_path, report_path):
    with open(request_path) as f:
        request = json.load(f)
    report = {
        "backend": keras.config.backend(),
        "contract": conformance.check(backends.current(), harness.current()),
        "grid": grid(request["cases"]),
        "ghost": ghost(request["ghost_batch"], request["ghost_group_size"]),
        "synchronized": synchronized(),
        "fit_losses": fit_models(request["fit_models"], request["fit_images"]),
        "saved": saved_models(request),
        "tools": tools(),
    }
    with open(report_path, "w") as f:
        json.dump(report, f, default=lambda value: value.item())  # NumPy scalars


if __name__ == "__main__":
    main(*sys.argv[1:3])
