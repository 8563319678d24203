"""bn_keras.serve.images: headers read without decoding, decoding to RGB, Keras' resizing."""

import io
import struct

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from bn_keras.data import cifar
from bn_keras.serve import images

SIZE = cifar.IMAGE_SHAPE[:2]


def _pixels(height, width, channels, seed=0):
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _encoded(array, fmt, **options):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def _write(tmp_path, name, contents):
    path = tmp_path / name
    path.write_bytes(contents)
    return str(path)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_header(channels):
    contents = _encoded(_pixels(48, 64, channels), "PNG")
    header = images.read_header(io.BytesIO(contents))
    assert header == images.Header("PNG", 64, 48, channels)


@pytest.mark.parametrize("options", [{}, {"progressive": True},
                                     {"icc_profile": b"\0" * 70_000}])  # segments to skip
@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_header(channels, options):
    contents = _encoded(_pixels(48, 64, channels), "JPEG", **options)
    header = images.read_header(io.BytesIO(contents))
    assert header == images.Header("JPEG", 64, 48, channels)


def test_crafted_png_is_a_real_png(png_claiming):
    image = tf.io.decode_png(png_claiming(5, 1)).numpy()
    assert image.shape == (1, 5, 3) and not image.any()
    assert images.read_header(io.BytesIO(png_claiming(40000, 40000))).pixels == 40000**2


def test_enormous_png_is_refused_before_decoding(tmp_path, png_claiming, monkeypatch):
    path = _write(tmp_path, "bomb.png", png_claiming(40000, 40000))
    decoded = []
    monkeypatch.setattr(tf.io, "decode_png", lambda *a, **k: decoded.append(a))
    with pytest.raises(images.UnreadableImage) as error:
        images.load(path, SIZE)
    assert str(error.value) == (
        f"{path}: its PNG header claims 40000x40000 pixels (4.8 GB decoded as RGB), more than "
        f"the limit of {images.MAX_PIXELS:,} pixels; refused before decoding.")
    assert decoded == []


def test_enormous_jpeg_is_refused_from_its_frame_header(tmp_path):
    frame = struct.pack(">BHHB", 8, 65000, 65000, 3) + b"\x01\x11\x00" * 3
    contents = (b"\xff\xd8" + b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0" + b"\0" * 9
                + b"\xff\xc0" + struct.pack(">H", 2 + len(frame)) + frame + b"\xff\xd9")
    with pytest.raises(images.UnreadableImage, match="JPEG header claims 65000x65000 pixels "
                       r"\(12.7 GB decoded as RGB\).*refused before decoding"):
        images.load(_write(tmp_path, "bomb.jpg", contents), SIZE)


def test_the_limit_is_a_parameter(tmp_path):
    path = _write(tmp_path, "a.png", _encoded(_pixels(32, 32, 3), "PNG"))
    images.load(path, SIZE, max_pixels=32 * 32)
    with pytest.raises(images.UnreadableImage, match="claims 32x32 pixels"):
        images.load(path, SIZE, max_pixels=32 * 32 - 1)


def test_resized_as_keras_resizing_does(tmp_path):
    pixels = _pixels(48, 64, 3)
    image, notes = images.load(_write(tmp_path, "wide.png", _encoded(pixels, "PNG")), SIZE)
    expected = keras.layers.Resizing(*SIZE)(pixels.astype("float32")[None])[0]
    assert image.dtype == np.uint8 and image.shape == cifar.IMAGE_SHAPE
    np.testing.assert_array_equal(image, np.round(keras.ops.convert_to_numpy(expected)))
    assert notes == ["resized from 64x48 to 32x32 (bilinear, as keras.layers.Resizing)"]


def test_32x32_rgb_is_unchanged(tmp_path):
    pixels = _pixels(32, 32, 3)
    image, notes = images.load(_write(tmp_path, "a.png", _encoded(pixels, "PNG")), SIZE)
    np.testing.assert_array_equal(image, pixels)
    assert notes == []


def test_rgba_drops_alpha_and_grayscale_becomes_rgb(tmp_path):
    rgba = _pixels(32, 32, 4)
    image, notes = images.load(_write(tmp_path, "rgba.png", _encoded(rgba, "PNG")), SIZE)
    np.testing.assert_array_equal(image, rgba[..., :3])
    assert notes == ["alpha channel dropped"]

    gray = _pixels(32, 32, 1)
    image, notes = images.load(_write(tmp_path, "gray.png", _encoded(gray, "PNG")), SIZE)
    np.testing.assert_array_equal(image, np.repeat(gray[..., None], 3, axis=-1))
    assert notes == ["grayscale, replicated to 3 channels"]

    gray_jpeg = _write(tmp_path, "gray.jpg", _encoded(gray, "JPEG", quality=100))
    image, notes = images.load(gray_jpeg, SIZE)
    assert image.shape == cifar.IMAGE_SHAPE
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()
    assert notes == ["grayscale, replicated to 3 channels"]


@pytest.mark.parametrize("name,contents,reason", [
    ("notes.png", b"not an image at all", "not a PNG or JPEG image (it starts with b'not an i')"),
    ("cut.png", None, "its PNG data do not decode"),
    ("empty.jpg", b"\xff\xd8", "a JPEG that ends before its frame header (SOF)."),
    ("short.png", b"\x89PNG\r\n\x1a\n\0\0", "a PNG without its IHDR header chunk."),
])
def test_unreadable_files_are_named_with_the_reason(tmp_path, name, contents, reason):
    if contents is None:
        contents = _encoded(_pixels(32, 32, 3), "PNG")[:60]
    path = _write(tmp_path, name, contents)
    with pytest.raises(images.UnreadableImage) as error:
        images.load(path, SIZE)
    assert str(error.value).startswith(f"{path}: {reason}")


def test_missing_file(tmp_path):
    with pytest.raises(images.UnreadableImage, match="absent.png: No such file"):
        images.load(str(tmp_path / "absent.png"), SIZE)


def test_find(tmp_path):
    for name in ("b.png", "a.JPG", "c.jpeg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    named = str(tmp_path / "elsewhere.png")
    assert images.find([str(tmp_path), named]) == [
        str(tmp_path / n) for n in ("a.JPG", "b.png", "c.jpeg")] + [named]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no PNG or JPEG images in"):
        images.find([str(tmp_path / "empty")])


def test_a_16000_square_png_is_refused_within_the_memory_budget(tmp_path, png_claiming):
    """0.75 MB declaring 16000x16000 peaked at 2.9 GB: under the old limit (2**28 pixels)
    it passed; decoding and resizing hold ~9 bytes a pixel, so the limit is 2**26."""
    path = _write(tmp_path, "big.png", png_claiming(16000, 16000))
    with pytest.raises(images.UnreadableImage, match="more than the limit of 67,108,864"):
        images.load(path, (32, 32))


def test_a_fifo_named_like_an_image_is_skipped_not_waited_on(tmp_path):
    import os

    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    with pytest.raises(images.UnreadableImage, match="not a regular file"):
        images.load(str(fifo), (32, 32))
