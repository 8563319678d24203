"""bn_keras.data: TFDS loading (mocked), pipelines, synthetic sources, missing-data errors."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from bn_keras import cifar, data


def _raw_images(n=24, seed=0):
    return data.synthetic_images(n, seed=seed)


def test_mocked_tfds_splits_have_cifar_structure():
    with tfds.testing.mock_data(num_examples=30):
        pipelines = data.cifar10_pipelines(batch_size=8, download=False)
        for split, ds in pipelines.items():
            images, labels = next(iter(ds))
            assert images.shape == (8, 32, 32, 3) and images.dtype == tf.float32, split
            assert labels.dtype == tf.int64
            assert np.all((labels.numpy() >= 0) & (labels.numpy() < 10))


def test_drop_remainder_gives_full_batches_only():
    ds = data.make_pipeline(_raw_images(20), batch_size=8, training=True, drop_remainder=True)
    assert [int(x.shape[0]) for x, _ in ds] == [8, 8]
    ds = data.make_pipeline(_raw_images(20), batch_size=8, training=False)
    assert [int(x.shape[0]) for x, _ in ds] == [8, 8, 4]


def test_normalization_uses_cifar_channel_statistics():
    pixels = np.array([[[[0, 128, 255]]]], dtype=np.uint8)
    out = data.normalize_images(tf.constant(pixels)).numpy()[0, 0, 0]
    expected = (np.array([0, 128, 255]) / 255.0 - np.array(data.CIFAR10_MEAN)) / np.array(
        data.CIFAR10_STD)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_evaluation_pipeline_keeps_order_and_never_augments():
    raw = _raw_images(16)
    images = np.stack([x for x, _ in raw.as_numpy_iterator()])
    ds = data.make_pipeline(raw, batch_size=16, training=False, augment=True)
    out, _ = next(iter(ds))
    np.testing.assert_allclose(out.numpy(), data.normalize_images(images).numpy(), rtol=1e-6)


def test_training_pipeline_is_seeded_and_reshuffles_each_epoch():
    def epochs(seed, augment):
        ds = data.make_pipeline(_raw_images(32), batch_size=32, training=True, augment=augment,
                                seed=seed)
        return [next(iter(ds))[0].numpy() for _ in range(2)]

    first, again, other = epochs(1, True), epochs(1, True), epochs(2, True)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], first[1])  # a new order / augmentation per epoch
    assert not np.array_equal(first[0], other[0])


def test_augmentation_only_crops_and_flips_in_training():
    raw = _raw_images(32)
    plain = data.make_pipeline(raw, batch_size=32, training=True, augment=False, seed=3)
    augmented = data.make_pipeline(raw, batch_size=32, training=True, augment=True, seed=3)
    (x_plain, y_plain), (x_aug, y_aug) = next(iter(plain)), next(iter(augmented))
    np.testing.assert_array_equal(y_plain.numpy(), y_aug.numpy())  # same order
    assert x_aug.shape == x_plain.shape
    assert not np.allclose(x_aug.numpy(), x_plain.numpy())
    # Without augmentation, training batches are a permutation of the raw images.
    raw_sorted = np.sort(data.normalize_images(
        np.stack([x for x, _ in raw.as_numpy_iterator()])).numpy().reshape(32, -1), axis=0)
    np.testing.assert_allclose(np.sort(x_plain.numpy().reshape(32, -1), axis=0), raw_sorted,
                               rtol=1e-6)


def test_augmented_images_are_shifted_crops_or_their_mirrors():
    images = np.stack([np.arange(32 * 32 * 3).reshape(32, 32, 3) * (i + 1) % 251
                       for i in range(16)]).astype(np.uint8)
    out = data.augment_images(tf.constant(images), tf.constant([4, 2], tf.int64)).numpy()
    flipped = 0
    for image, result in zip(images, out):
        padded = np.pad(image, [(4, 4), (4, 4), (0, 0)], mode="reflect")
        crops = [padded[i:i + 32, j:j + 32] for i in range(9) for j in range(9)]
        plain = any(np.array_equal(result, c) for c in crops)
        mirrored = any(np.array_equal(result, c[:, ::-1]) for c in crops)
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 0 < flipped < 16  # each image flips on its own coin


def test_synthetic_sources_have_the_tutorial_shapes():
    x, y = next(iter(data.synthetic_images(4)))
    assert x.shape == (32, 32, 3) and x.dtype == tf.uint8 and y.dtype == tf.int64
    x, _ = next(iter(data.synthetic_sequences(4)))
    assert x.shape == (128, 256) and x.dtype == tf.float32


def test_missing_data_is_one_clear_error(tmp_path):
    with pytest.raises(data.DataNotFoundError, match=r"not prepared in .*cifar10.*downloading is off"):
        data.load_cifar10("train", data_dir=str(tmp_path), download=False)
    with pytest.raises(data.DataNotFoundError, match="does not exist"):
        data.load_cifar10("train", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="Unknown split='dev'"):
        data.load_cifar10("dev")


def test_tfds_data_dir_environment_variable_is_honoured(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert data.resolve_data_dir() == str(tmp_path)
    assert data.resolve_data_dir("/explicit") == "/explicit"
    with pytest.raises(data.DataNotFoundError, match=str(tmp_path)):
        data.load_cifar10("test", download=False)


@pytest.mark.real_data
def test_real_cifar10_splits_and_statistics(cifar10_dir):
    sizes = {split: int(data.load_cifar10(split, cifar10_dir, download=False).cardinality())
             for split in data.SPLITS}
    assert sizes == cifar.SPLIT_SIZES
    ds = data.make_pipeline(data.load_cifar10("train", cifar10_dir, download=False),
                            batch_size=5000, training=False)
    x, y = next(iter(ds))
    # Normalized with CIFAR-10's own statistics: about zero mean, unit spread per channel.
    np.testing.assert_allclose(x.numpy().mean(axis=(0, 1, 2)), 0.0, atol=0.05)
    np.testing.assert_allclose(x.numpy().std(axis=(0, 1, 2)), 1.0, atol=0.05)
    assert set(np.unique(y.numpy())) == set(range(10))


def test_partly_read_pipeline_still_yields_every_batch_inside_tf_function():
    # A probe batch read first used to leave tf.data's in-memory cache partly filled; the
    # next full pass, inside a tf.function (as Keras runs steps_per_execution > 1), then
    # finalized it truncated and every later epoch saw only the probe's batches.
    @tf.function
    def count(ds):
        n = tf.constant(0)
        for _ in ds:
            n += 1
        return n

    with tfds.testing.mock_data(num_examples=2000):
        for trial in range(3):
            ds = data.cifar10_pipelines(batch_size=10, download=False)["test"]
            next(iter(ds.unbatch().batch(256)))
            assert int(count(ds)) == 200, trial
            assert sum(1 for _ in ds) == 200, trial
