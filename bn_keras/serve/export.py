"""SavedModel export for serving: TF Serving's versioned layout, BN folded, atomic writes.

    saved_models/<name>/<version>/saved_model.pb, variables/, assets/,
                                  bn_keras_metadata.json

Signatures:
- `serving_default`: `image` uint8 [None, 32, 32, 3], raw pixels; normalization
  happens in the graph. Outputs `probabilities` float32 [None, 10],
  `class_id` int64 [None] and `logits` float32 [None, 10].
- `normalized`: `normalized_image` float32 [None, 32, 32, 3], already
  normalized as bn_keras.data.pipelines.normalize_images does; the same outputs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from bn_keras import atomic, keras_compat
from bn_keras.data import cifar
from bn_keras.data.pipelines import normalize_images
from bn_keras.errors import (
    AlreadyExists,
    DamagedFile,
    InvalidSetting,
    NotFound,
    Unusable,
    cannot_write,
)
from bn_keras.layers.folding import FoldReport, fold_batch_norm, fold_report
from bn_keras.locking import DirectoryLock

METADATA_FILE = "bn_keras_metadata.json"
INPUT_NAME = "image"
NORMALIZED_INPUT_NAME = "normalized_image"
OUTPUT_NAMES = ("probabilities", "class_id", "logits")


def next_version(model_dir: str) -> int:
    """1 + the highest integer version under `model_dir` (1 when there is none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(d) for d in os.listdir(model_dir) if re.fullmatch(r"\d+", d)]
    return max(versions, default=0) + 1


def _outputs(logits):
    logits = tf.cast(logits, tf.float32)
    return {"probabilities": tf.nn.softmax(logits), "class_id": tf.argmax(logits, axis=-1),
            "logits": logits}


def export_saved_model(model: keras.Model, base_dir: str, name: str, version: int | None = None,
                       fold_bn: bool = True, metadata: dict[str, Any] | None = None,
                       overwrite: bool = False) -> str:
    """Exports `model` (normalized CIFAR images -> logits) to base_dir/name/version; returns
    the path.

    Written to a temporary directory beside the target and renamed into
    place, so TF Serving never sees a half-written version.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
        raise InvalidSetting(f"model name {name!r} must be letters, digits, '_', '-' or '.' "
                             "(and not '.' or '..', which name no model directory).")
    model_dir = os.path.join(base_dir, name)
    if version is not None and version < 1:
        raise InvalidSetting(f"version must be a positive integer, got {version}.")
    # One export into a model's directory at a time: two would pick the same next version.
    with DirectoryLock(model_dir, "model directory", "`name` or `base_dir`"):
        version = next_version(model_dir) if version is None else version
        target = os.path.join(model_dir, str(version))
        if os.path.exists(target) and not overwrite:
            raise AlreadyExists(f"{target} exists; pass overwrite=True to "
                                "replace it.")
        _write_version(model, target, name, version, fold_bn, metadata)
    return target


def mixed_precision(model: keras.Model) -> str | None:
    """The dtype policy of `model`'s layers that compute in float16 or bfloat16
    ("mixed_bfloat16"), or None for a model that computes in float32."""
    return next((layer.dtype_policy.name for layer in keras_compat.flatten_layers(model)
                 if layer.compute_dtype in ("float16", "bfloat16")), None)


def float32_copy(model: keras.Model) -> keras.Model:
    """`model` with every layer computing in float32 (its weights are float32 already)."""
    def clone(layer):
        config = layer.get_config()
        if "dtype" in config and not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def serving_model(model: keras.Model, fold_bn: bool = True) -> keras.Model:
    """What a SavedModel serves: `model` with BN folded (`fold_bn`), computing in float32.

    A model trained under mixed precision is served in float32: folded in bfloat16, the
    conv would round W * gamma / sigma to 8 bits where the unfolded one rounded W, and
    the two would differ by that rounding (0.0234 in the logits on a ResNet-20); in
    float32 the fold is exact to 1e-4, and the float32 model scores as the mixed one
    (the export reports both accuracies).
    """
    mixed = mixed_precision(model) is not None
    if fold_bn:
        return fold_batch_norm(model, dtype="float32" if mixed else None)
    return float32_copy(model) if mixed else model


def _write_version(model, target, name, version, fold_bn, metadata) -> None:
    """The SavedModel, through a temporary directory beside `target` and a rename."""
    serving_model_ = serving_model(model, fold_bn)
    archive = keras.export.ExportArchive()
    archive.track(serving_model_)

    def from_pixels(image):
        return _outputs(serving_model_(normalize_images(image), training=False))

    def from_normalized(normalized_image):
        return _outputs(serving_model_(normalized_image, training=False))

    archive.add_endpoint("serving_default", from_pixels, input_signature=[
        tf.TensorSpec([None, *cifar.IMAGE_SHAPE], tf.uint8, name=INPUT_NAME)])
    archive.add_endpoint("normalized", from_normalized, input_signature=[
        tf.TensorSpec([None, *cifar.IMAGE_SHAPE], tf.float32, name=NORMALIZED_INPUT_NAME)])

    model_dir = os.path.dirname(target)
    for leftover in os.listdir(model_dir):  # of an export that was killed (the lock is ours)
        if leftover.startswith(".tmp-"):
            shutil.rmtree(os.path.join(model_dir, leftover), ignore_errors=True)
    tmp = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}")
    try:
        archive.write_out(tmp, verbose=False)
        report = fold_report(model) if fold_bn else FoldReport((), {})
        info = {"name": name, "version": version, "bn_folded": fold_bn,
                "folded_pairs": [list(pair) for pair in report.folded],
                "bn_not_folded": report.kept,
                "class_names": list(cifar.CLASS_NAMES),
                "input": {"name": INPUT_NAME, "dtype": "uint8",
                          "shape": [None, *cifar.IMAGE_SHAPE]},
                "outputs": list(OUTPUT_NAMES), **(metadata or {})}
        atomic.write_json(os.path.join(tmp, METADATA_FILE), info)
        atomic.publish_directory(tmp, target)
    except Unusable:
        raise
    except (OSError, tf.errors.OpError) as e:
        raise cannot_write(target, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_serving_model(path: str):
    """tf.saved_model.load of an exported version, with a clear error if it is not one.

    Loading runs the graph the SavedModel holds, whatever it is (that is how TensorFlow
    works: a SavedModel is a program): load only SavedModels you or someone you trust
    exported."""
    if not os.path.isdir(path):
        raise NotFound(f"no SavedModel directory at {path!r}.")
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise NotFound(f"{path!r} is not a SavedModel (no saved_model.pb in it).")
    try:
        loaded = tf.saved_model.load(path)
    except (OSError, ValueError, IndexError, KeyError, tf.errors.OpError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DamagedFile(path, f"TensorFlow cannot load it: {reason}",
                          "export the model again") from None
    if "serving_default" not in loaded.signatures:
        raise InvalidSetting(f"{path!r} has no serving_default signature.")
    return loaded


def read_metadata(path: str) -> dict[str, Any]:
    """An exported version's bn_keras_metadata.json; NotFound or DamagedFile in one line."""
    metadata_path = os.path.join(path, METADATA_FILE)
    metadata = atomic.read_json(metadata_path, kind=dict)
    if metadata is None:
        raise NotFound(f"{path!r} has no {METADATA_FILE}: was it exported by "
                       "experiments/export.py?")
    if not isinstance(metadata.get("class_names"), list):
        raise DamagedFile(metadata_path, "it lacks the class names")
    return metadata


def rest_request_body(images: np.ndarray) -> str:
    """The JSON body of TF Serving's REST predict call: {"instances": [...]} of uint8 pixels."""
    return json.dumps({"instances": np.asarray(images, dtype=np.uint8).tolist()})


def images_from_request_body(body: str) -> np.ndarray:
    """What TF Serving does with a row-format body for our single input: uint8 [N, 32, 32, 3]."""
    return check_images(np.asarray(json.loads(body)["instances"], dtype=np.uint8))


def check_images(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 32, 32, 3], or ValueError saying what was received."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != cifar.IMAGE_SHAPE:
        raise InvalidSetting(f"expected images of shape [N, 32, 32, 3], got {list(images.shape)}.")
    return images.astype(np.uint8)


def serve(loaded, images: np.ndarray, batch_size: int = 500, signature: str = "serving_default"
          ) -> dict[str, np.ndarray]:
    """Runs a loaded SavedModel's signature over `images` in batches; concatenated outputs."""
    fn = loaded.signatures[signature]
    input_name = INPUT_NAME if signature == "serving_default" else NORMALIZED_INPUT_NAME
    dtype = tf.uint8 if signature == "serving_default" else tf.float32
    parts = [fn(**{input_name: tf.constant(images[i:i + batch_size], dtype)})
             for i in range(0, len(images), batch_size)]
    return {k: np.concatenate([p[k].numpy() for p in parts]) for k in OUTPUT_NAMES}


def compare_logits(logits: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Max |logit difference| and the fraction of examples whose predicted class differs."""
    return {"max_abs_logit_diff": float(np.max(np.abs(logits - reference))),
            "class_mismatch_rate": float(np.mean(logits.argmax(-1) != reference.argmax(-1)))}


def keras_logits(model: keras.Model, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Inference-mode logits of a Keras model on raw uint8 images."""
    normalized = normalize_images(images)
    return np.asarray(model.predict(normalized, batch_size=batch_size, verbose=0), np.float32)
