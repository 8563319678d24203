"""bn_keras.serve.export and the export/verify/predict scripts, on a small trained model."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from bn_keras import models
from bn_keras.data import cifar, pipelines, sources
from bn_keras.errors import DamagedFile, InUse
from bn_keras.locking import DirectoryLock
from bn_keras.serve import export


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    """LeNet with our BN, its moving statistics and affine parameters set away from their
    initial values (as training leaves them), saved as .keras."""
    keras.utils.set_random_seed(0)
    model = models.lenet_cifar("custom", momentum=0.9)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.name.endswith("_bn"):
            layer.set_weights([rng.uniform(0.5, 2.0, w.shape).astype(np.float32)
                               for w in layer.get_weights()])
    path = str(tmp_path_factory.mktemp("model") / "lenet.keras")
    model.save(path)
    return model, path


@pytest.fixture(scope="module")
def images():
    examples = sources.synthetic_images(64, seed=5)
    return examples.inputs, examples.labels


def test_export_layout_signatures_and_versions(tmp_path, lenet, images):
    model, _ = lenet
    first = export.export_saved_model(model, str(tmp_path), "lenet", metadata={"bn": "custom"})
    second = export.export_saved_model(model, str(tmp_path), "lenet", fold_bn=False)
    assert first == str(tmp_path / "lenet" / "1") and second == str(tmp_path / "lenet" / "2")
    # No temporary leftovers; TF Serving reads the numbered versions only, not the lock.
    assert sorted(os.listdir(tmp_path / "lenet")) == [".lock", "1", "2"]
    with pytest.raises(FileExistsError, match="exists"):
        export.export_saved_model(model, str(tmp_path), "lenet", version=1)
    meta = export.read_metadata(first)
    assert meta["bn_folded"] and meta["bn"] == "custom" and meta["class_names"][3] == "cat"

    loaded = export.load_serving_model(first)
    fn = loaded.signatures["serving_default"]
    assert list(fn.structured_input_signature[1]) == ["image"]
    assert fn.structured_input_signature[1]["image"].dtype == tf.uint8
    assert set(fn.structured_outputs) == {"probabilities", "class_id", "logits"}
    served = export.serve(loaded, images[0])
    reference = export.keras_logits(model, images[0])
    np.testing.assert_allclose(served["logits"], reference, atol=1e-4)
    np.testing.assert_array_equal(served["class_id"], reference.argmax(-1))
    np.testing.assert_allclose(served["probabilities"].sum(-1), 1.0, atol=1e-5)
    normalized = export.serve(loaded, pipelines.normalize_images(images[0]).numpy(),
                              signature="normalized")
    np.testing.assert_allclose(normalized["logits"], served["logits"], atol=1e-5)


def test_rest_body_feeds_the_serving_signature(tmp_path, lenet, images):
    model, _ = lenet
    path = export.export_saved_model(model, str(tmp_path), "lenet")
    body = export.rest_request_body(images[0][:2])
    assert json.loads(body)["instances"][0][0][0] == images[0][0, 0, 0].tolist()
    served = export.serve(export.load_serving_model(path), export.images_from_request_body(body))
    np.testing.assert_allclose(served["logits"], export.keras_logits(model, images[0][:2]),
                               atol=1e-4)
    with pytest.raises(ValueError, match=r"shape \[N, 32, 32, 3\], got \[1, 28, 28, 3\]"):
        body = json.dumps({"instances": np.zeros((1, 28, 28, 3)).tolist()})
        export.images_from_request_body(body)


def test_bad_saved_model_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no SavedModel directory"):
        export.load_serving_model(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="not a SavedModel"):
        export.load_serving_model(str(tmp_path))


def test_a_cut_saved_model_is_one_line_and_a_busy_model_dir_is_refused(tmp_path, lenet):
    model, _ = lenet
    path = export.export_saved_model(model, str(tmp_path), "lenet")
    pb = os.path.join(path, "saved_model.pb")
    with open(pb, "rb") as f:
        data = f.read()
    with open(pb, "wb") as f:
        f.write(data[: len(data) // 3])
    with pytest.raises(DamagedFile, match=r"saved_model.pb|TensorFlow cannot load it") as error:
        export.load_serving_model(path)
    assert "\n" not in str(error.value) and str(error.value).endswith("export the model again.")
    # Two exports into one model directory would pick the same version: one at a time.
    with DirectoryLock(str(tmp_path / "lenet")), pytest.raises(
            InUse, match=r"model directory .*lenet' is in use by process"):
        export.export_saved_model(model, str(tmp_path), "lenet")


@pytest.mark.slow
def test_export_script_verifies_in_a_fresh_process(tmp_path, lenet, scripts):
    _, model_path = lenet
    proc = scripts.run("experiments/export", f"--model_path={model_path}", "--name=small",
                       f"--base_dir={tmp_path}", "--dataset=synthetic", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "signature_def['serving_default']" in proc.stdout  # saved_model_cli's format
    assert "served model (fresh process): test accuracy" in proc.stdout
    assert "BN folding: 4 BN layers folded" in proc.stdout
    assert os.path.exists(tmp_path / "small" / "1" / "saved_model.pb")


@pytest.mark.slow
def test_predict_script_takes_any_image_and_skips_unreadable_ones(tmp_path, lenet, images,
                                                                 png_claiming, scripts):
    model, _ = lenet
    export.export_saved_model(model, str(tmp_path / "models"), "lenet")
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    tf.io.write_file(str(img_dir / "cifar.png"), tf.io.encode_png(images[0][0]))
    tf.io.write_file(str(img_dir / "wide.png"), tf.io.encode_png(np.zeros((48, 64, 3), np.uint8)))
    tf.io.write_file(str(img_dir / "rgba.png"), tf.io.encode_png(np.zeros((32, 32, 4), np.uint8)))
    tf.io.write_file(str(img_dir / "gray.jpg"), tf.io.encode_jpeg(np.zeros((32, 32, 1), np.uint8)))
    (img_dir / "notes.png").write_text("not an image")
    (img_dir / "huge.png").write_bytes(png_claiming(40000, 40000))

    def predict(*args):
        return scripts.run("experiments/predict", *args, timeout=300)

    proc = predict(f"--saved_model={tmp_path / 'models' / 'lenet'}", str(img_dir),
                   str(tmp_path / "absent.png"))
    assert proc.returncode == 1, proc.stderr[-2000:]
    predicted = {line.split(": ")[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert sorted(predicted) == [str(img_dir / n) for n in ("cifar.png", "gray.jpg", "rgba.png",
                                                           "wide.png")]
    assert all(any(c in line for c in cifar.CLASS_NAMES) for line in predicted.values())
    errors = proc.stderr.splitlines()
    for line in (f"note: {img_dir / 'wide.png'}: resized from 64x48 to 32x32 (bilinear, "
                 "as keras.layers.Resizing)",
                 f"note: {img_dir / 'rgba.png'}: alpha channel dropped",
                 f"note: {img_dir / 'gray.jpg'}: grayscale, replicated to 3 channels",
                 f"skipped {img_dir / 'notes.png'}: not a PNG or JPEG image (it starts with "
                 "b'not an i').",
                 f"skipped {tmp_path / 'absent.png'}: No such file or directory."):
        assert line in errors, proc.stderr[-2000:]
    assert (f"skipped {img_dir / 'huge.png'}: its PNG header claims 40000x40000 pixels (4.8 GB "
            "decoded as RGB)") in proc.stderr and "refused before decoding" in proc.stderr
    assert errors[-1].startswith("error: 3 of 7 images could not be read (named above)")
    assert "Traceback" not in proc.stderr

    proc = predict(f"--saved_model={tmp_path}", str(img_dir))
    assert proc.returncode != 0 and "not a SavedModel" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_export_re_estimates_bn_statistics_when_asked(tmp_path, lenet, load_script):
    """--recalibrate_bn_batches: the served model is the model with its statistics
    re-estimated over that many unaugmented training batches; the metadata says so."""
    from bn_keras import saving
    from bn_keras.layers import recalibrate_batch_norm

    script = load_script("experiments/export")
    _, model_path = lenet
    report = script.run(None, model_path, "small", str(tmp_path), None, False, True,
                        "synthetic", None, False, recalibrate_bn_batches=2,
                        recalibration_batch_size=16)
    assert report["recalibration"] == {"batches": 2, "examples": 32}
    expected = saving.load_model(model_path)
    recalibrate_batch_norm(expected, script.recalibration_data("synthetic", None, 16),
                           num_batches=2)
    images = sources.synthetic_images(32, seed=9).inputs
    served = tf.saved_model.load(report["saved_model"]).signatures["serving_default"]
    logits = served(image=tf.constant(images))["logits"].numpy()
    np.testing.assert_allclose(logits, export.keras_logits(expected, images), atol=1e-4)
    assert np.abs(logits - export.keras_logits(lenet[0], images)).max() > 1e-2
    with open(os.path.join(report["saved_model"], export.METADATA_FILE)) as f:
        assert json.load(f)["bn_recalibration"] == {"batches": 2, "examples": 32}


@pytest.mark.slow
def test_a_mixed_bfloat16_model_exports_folded_and_served_in_float32(tmp_path, load_script):
    """A run trained under mixed_bfloat16 (the ResNet-20 recipe's precision) exports with BN
    folded: the serving model computes in float32, the fold is checked there within 1e-4,
    and the report gives the test accuracy in both precisions."""
    from bn_keras.precision import dtype_policy
    from bn_keras.testing import bn_tools

    keras.utils.set_random_seed(0)
    with dtype_policy("mixed_bfloat16"):
        model = models.lenet_cifar("custom", momentum=0.9)
    bn_tools.randomize_batch_norm(model)
    path = str(tmp_path / "bf16.keras")
    model.save(path)
    script = load_script("experiments/export")
    report = script.run(None, path, "bf16", str(tmp_path), None, False, True, "synthetic",
                        None, True)
    assert report["mixed_precision"]["policy"] == "mixed_bfloat16"
    assert report["folded_vs_unfolded"]["max_abs_logit_diff"] <= script.FOLD_TOLERANCE
    assert report["served"]["test_accuracy"] == report["mixed_precision"][
        "test_accuracy_float32"]
    served = export.load_serving_model(report["saved_model"])
    assert served.signatures["serving_default"].structured_outputs["logits"].dtype == tf.float32


@pytest.mark.parametrize("name", ["..", "."])
def test_a_name_that_climbs_out_of_the_base_dir_is_refused(tmp_path, lenet, name):
    with pytest.raises(ValueError, match=r"not '\.' or '\.\.'"):
        export.export_saved_model(lenet[0], str(tmp_path / "base"), name)
    assert not (tmp_path / "1").exists() and not (tmp_path / "base").exists()


@pytest.mark.parametrize("content,error", [(None, "has no bn_keras_metadata.json"),
                                           ("{", "is damaged"), ("{}", "lacks the class names")])
def test_missing_or_damaged_metadata_is_one_line(tmp_path, content, error):
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    if content is not None:
        (version / export.METADATA_FILE).write_text(content)
    with pytest.raises(OSError, match=error):  # NotFound or DamagedFile, both one line
        export.read_metadata(str(version))


@pytest.mark.slow
def test_a_truncated_variables_file_is_one_line(tmp_path, lenet):
    target = export.export_saved_model(lenet[0], str(tmp_path), "small")
    data = os.path.join(target, "variables", "variables.data-00000-of-00001")
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 3)
    with pytest.raises(DamagedFile, match="TensorFlow cannot load it"):
        export.load_serving_model(target)
