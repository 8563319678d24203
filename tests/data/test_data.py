"""bn_keras.data: TFDS loading (mocked), epoch-indexed pipelines, synthetic sources, errors."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from bn_keras.data import cifar, pipelines, sources
from bn_keras.errors import DamagedFile


def _examples(n=24, seed=0):
    return sources.synthetic_images(n, seed=seed)


def _epoch_arrays(stream, epoch):
    batches = list(stream.epoch(epoch))
    return (np.concatenate([x.numpy() for x, _ in batches]),
            np.concatenate([y.numpy() for _, y in batches]))


def test_mocked_tfds_splits_have_cifar_structure():
    with tfds.testing.mock_data(num_examples=30):
        data = pipelines.cifar10_pipelines(batch_size=8, download=False, eval_batch_size=16)
    images, labels = next(iter(data.train.epoch(0)))
    assert images.shape == (8, 32, 32, 3) and images.dtype == tf.float32
    assert labels.dtype == tf.int64 and np.all((labels.numpy() >= 0) & (labels.numpy() < 10))
    for split in (data.validation, data.test):
        images, labels = next(iter(split))
        assert images.shape == (16, 32, 32, 3) and images.dtype == tf.float32
    assert data.train.steps_per_epoch == 4  # ceil(30 / 8)


def test_train_examples_takes_the_first_n():
    with tfds.testing.mock_data(num_examples=30):
        full = sources.cifar10_examples("train", download=False)
        stream = pipelines.cifar10_pipelines(batch_size=8, download=False,
                                             train_examples=12).train
    assert stream.num_examples == 12 and stream.steps_per_epoch == 2
    np.testing.assert_array_equal(stream.examples.labels, full.labels[:12])


def test_drop_remainder_gives_full_batches_only():
    stream = pipelines.TrainingStream(_examples(20), batch_size=8, drop_remainder=True)
    assert [int(x.shape[0]) for x, _ in stream.epoch(0)] == [8, 8]
    assert stream.steps_per_epoch == 2 and stream.examples_per_epoch == 16
    stream = pipelines.TrainingStream(_examples(20), batch_size=8)
    assert [int(x.shape[0]) for x, _ in stream.epoch(0)] == [8, 8, 4]
    assert stream.steps_per_epoch == 3 and stream.examples_per_epoch == 20
    with pytest.raises(ValueError, match="do not fill one batch"):
        pipelines.TrainingStream(_examples(5), batch_size=8, drop_remainder=True)


def test_normalization_uses_cifar_channel_statistics():
    pixels = np.array([[[[0, 128, 255]]]], dtype=np.uint8)
    out = pipelines.normalize_images(tf.constant(pixels)).numpy()[0, 0, 0]
    expected = (np.array([0, 128, 255]) / 255.0 - np.array(cifar.MEAN)) / np.array(cifar.STD)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_evaluation_pipeline_keeps_order():
    examples = _examples(16)
    out = np.concatenate([x.numpy() for x, _ in pipelines.evaluation_pipeline(examples, 5)])
    np.testing.assert_allclose(out, pipelines.normalize_images(examples.inputs).numpy(), rtol=1e-6)


def test_each_epoch_is_a_function_of_seed_and_epoch_alone():
    """Epoch 3 is the same batches whether or not epochs 0-2 were read before it,
    whichever stream object builds it, and whatever TensorFlow's global seed is."""
    def stream(seed):
        return pipelines.TrainingStream(_examples(32), batch_size=8, seed=seed, augment=True)

    first = stream(1)
    for epoch in range(3):
        _epoch_arrays(first, epoch)
    tf.random.set_seed(99)
    x3, y3 = _epoch_arrays(first, 3)
    again_x3, again_y3 = _epoch_arrays(stream(1), 3)  # a fresh stream, straight to epoch 3
    np.testing.assert_array_equal(x3, again_x3)
    np.testing.assert_array_equal(y3, again_y3)
    x0, _ = _epoch_arrays(stream(1), 0)
    assert not np.array_equal(x0, x3)  # a new order and augmentation every epoch
    assert not np.array_equal(x3, _epoch_arrays(stream(2), 3)[0])  # and every seed


def test_an_epoch_without_augmentation_is_a_permutation_of_the_examples():
    examples = _examples(32)
    x, y = _epoch_arrays(pipelines.TrainingStream(examples, batch_size=8, seed=3), 0)
    order = pipelines.epoch_rng(3, 0).permutation(32)
    np.testing.assert_array_equal(y, examples.labels[order])
    np.testing.assert_allclose(x, pipelines.normalize_images(examples.inputs[order]).numpy(),
                               rtol=1e-6)


def test_concatenated_epochs_equal_the_epochs_one_by_one():
    stream = pipelines.TrainingStream(_examples(20), batch_size=8, seed=5, augment=True)
    together = np.concatenate([x.numpy() for x, _ in stream.epochs(1, 3)])
    apart = np.concatenate([_epoch_arrays(stream, 1)[0], _epoch_arrays(stream, 2)[0]])
    np.testing.assert_array_equal(together, apart)


def test_augmented_images_are_shifted_crops_or_their_mirrors():
    images = np.stack([np.arange(32 * 32 * 3).reshape(32, 32, 3) * (i + 1) % 251
                       for i in range(16)]).astype(np.uint8)
    rng = np.random.default_rng(0)
    offsets = rng.integers(0, 9, size=(16, 2))
    flips = rng.random(16) < 0.5
    out = pipelines.augment_images(tf.constant(images), tf.constant(offsets), tf.constant(flips))
    for image, result, (i, j), flip in zip(images, out.numpy(), offsets, flips,
                                                    strict=True):
        crop = np.pad(image, [(4, 4), (4, 4), (0, 0)], mode="reflect")[i:i + 32, j:j + 32]
        np.testing.assert_array_equal(result, crop[:, ::-1] if flip else crop)
    assert 0 < flips.sum() < 16


def test_synthetic_sources_have_the_tutorial_shapes():
    images = sources.synthetic_images(4)
    assert images.inputs.shape == (4, 32, 32, 3) and images.inputs.dtype == np.uint8
    assert images.labels.dtype == np.int64
    sequences = sources.synthetic_sequences(4)
    assert sequences.inputs.shape == (4, 128, 256) and sequences.inputs.dtype == np.float32


def test_missing_data_is_one_clear_error(tmp_path):
    with pytest.raises(sources.DataNotFoundError,
                       match=r"not prepared in .*cifar10.*downloading is off"):
        sources.load_cifar10("train", data_dir=str(tmp_path), download=False)
    with pytest.raises(sources.DataNotFoundError, match="does not exist"):
        sources.load_cifar10("train", data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(ValueError, match="Unknown split='dev'"):
        sources.load_cifar10("dev")


def test_a_data_dir_that_does_not_exist_falls_back_to_tfds_default(monkeypatch, tmp_path,
                                                                    caplog):
    import tensorflow_datasets as tfds

    asked = []

    def fake_load(name, data_dir=None, download=False, **kwargs):
        asked.append((data_dir, download))
        raise AssertionError("Dataset cifar10: could not find data")

    monkeypatch.setattr(tfds, "load", fake_load)
    monkeypatch.setattr(sources, "_can_reach", lambda host: False)  # never download in tests
    with pytest.raises(sources.DataNotFoundError,
                       match=r"not prepared in ~/tensorflow_datasets/cifar10 .*no network"):
        sources.load_cifar10("test", data_dir=str(tmp_path / "nowhere"))
    assert asked == [(None, False)]
    assert "does not exist; using TFDS' default" in caplog.text


def test_a_data_dir_one_level_too_high_is_named_without_tfds_noise(tmp_path, caplog):
    prepared = tmp_path / "tensorflow_datasets" / "cifar10" / "3.0.2"
    prepared.mkdir(parents=True)
    (prepared / "dataset_info.json").write_text("{}")
    (tmp_path / "empty" / "cifar10" / "3.0.2").mkdir(parents=True)  # not prepared
    with pytest.raises(sources.DataNotFoundError) as error:
        sources.load_cifar10("test", data_dir=str(tmp_path / "empty"), download=False)
    assert str(error.value).endswith("Point `data_dir` or TFDS_DATA_DIR at a TFDS data "
                                     "directory holding cifar10/3.0.2.")
    with pytest.raises(sources.DataNotFoundError) as error:
        sources.load_cifar10("test", data_dir=str(tmp_path), download=False)
    nearby = tmp_path / "tensorflow_datasets"
    assert str(error.value).endswith(f"{nearby} holds cifar10/: pass data_dir={nearby}.")
    assert "\n" not in str(error.value)
    assert "Variant folder" not in caplog.text  # TFDS' warning about the empty folder


def test_tfds_data_dir_environment_variable_is_honoured(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert sources.resolve_data_dir() == str(tmp_path)
    assert sources.resolve_data_dir("/explicit") == "/explicit"
    with pytest.raises(sources.DataNotFoundError, match=str(tmp_path)):
        sources.load_cifar10("test", download=False)


@pytest.mark.slow
@pytest.mark.real_data
def test_real_cifar10_splits_and_statistics(cifar10_dir):
    splits = {split: sources.cifar10_examples(split, cifar10_dir, download=False)
              for split in cifar.SPLITS}
    assert {split: len(e) for split, e in splits.items()} == cifar.SPLIT_SIZES
    x = pipelines.normalize_images(splits["train"].inputs[:5000]).numpy()
    # Normalized with CIFAR-10's own statistics: about zero mean, unit spread per channel.
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0.0, atol=0.05)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1.0, atol=0.05)
    assert set(np.unique(splits["test"].labels)) == set(range(10))


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path, caplog):
    a_file = tmp_path / "cifar.tar"
    a_file.write_text("x")
    with pytest.raises(sources.DataNotFoundError, match=r"data_dir=.* is a file, not a "
                                                        r"directory"):
        sources.cifar10_splits(str(a_file))


def test_a_missing_data_dir_is_said_once_naming_tfds_default(tmp_path, caplog, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(sources.DataNotFoundError):
        with tfds_mock_failing():
            sources.cifar10_splits(str(tmp_path / "missing"), download=True)
    notes = [r.getMessage() for r in caplog.records if "does not exist" in r.getMessage()]
    assert len(notes) == 1  # once, not once per split
    assert f"using TFDS' default ({tmp_path / 'elsewhere'})" in notes[0]


def tfds_mock_failing():
    """TFDS finding nothing anywhere and no network: the load fails at once."""
    import contextlib
    from unittest import mock

    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch.object(sources, "_can_reach", lambda host: False))
    return stack


@pytest.mark.slow
@pytest.mark.real_data
def test_a_damaged_cifar_shard_is_one_line(tmp_path, cifar10_dir):
    """A truncated (or bit-flipped) TFRecord shard: DataLossError, 47 lines, before."""
    import shutil

    source = os.path.join(cifar10_dir, "cifar10")
    copy = tmp_path / "tfds" / "cifar10"
    shutil.copytree(source, copy)
    shard = next(p for p in copy.rglob("cifar10-test.tfrecord*"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedFile) as error:
        sources.cifar10_examples("test", str(tmp_path / "tfds"), download=False)
    assert str(error.value).startswith("CIFAR-10's test files under ")
    assert "prepare the dataset again" in str(error.value)
