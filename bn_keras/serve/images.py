"""PNG and JPEG files as a CIFAR model's input: measured from their headers, decoded, resized.

Every file is measured from its header before a pixel is decoded (PNG: the
IHDR chunk; JPEG: the SOFn frame header), and refused when it claims more than
`MAX_PIXELS`: TensorFlow's decoders size their output from the header, so a
4.6 MB PNG declaring 40000x40000 RGB would ask for 4.8 GB, and decoding plus resizing
holds about 9 bytes a pixel at the peak. (Pillow's lazy
`Image.open` reads the same headers, but its limit is a process-wide setting,
`PIL.Image.MAX_IMAGE_PIXELS`, that warns at one size and raises at twice it.)

Decoding is `tf.io.decode_png` / `tf.io.decode_jpeg` with `channels=3`, which
gives what `keras.utils.load_img(path)` (PIL's `convert("RGB")`) gives:
grayscale is replicated to three channels, and an alpha channel is dropped, not
composited (a transparent pixel shows whatever color it stores).

Images of another size are resized as Keras' image preprocessing does:
`tf.image.resize(image, size, method="bilinear")` without antialiasing, which is
what `keras.layers.Resizing(32, 32)` and
`keras.utils.image_dataset_from_directory(image_size=(32, 32))` compute with
their defaults, then rounded to uint8 for the serving signature.
(`keras.utils.load_img(target_size=...)` alone defaults to nearest-neighbour.)
The aspect ratio is not kept, as with those defaults.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import struct
from typing import BinaryIO

import numpy as np
import tensorflow as tf

from bn_keras.errors import NotFound, UserError

EXTENSIONS = (".png", ".jpg", ".jpeg")
# 2**26 pixels (67 MP, 8192 x 8192): what we are willing to spend on one image that is
# about to become 32x32 is 768 MiB at the peak, and decoding plus resizing holds about 9
# bytes a pixel (the decoded RGB, its copies, resize's float32 copy; measured: 292 MiB
# above the start for a 5792 x 5792 PNG), so about 584 MiB here. 48-50 MP phone photos
# pass; larger camera photos are refused (resize them first). Beyond it a header is far
# more likely a decompression bomb (a 16000 x 16000 PNG of 0.75 MB peaked at 2.9 GB).
MAX_PIXELS = 2**26

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # IHDR color type -> channels stored
# JPEG start-of-frame markers (SOF0-SOF15 less DHT C4, JPG C8 and DAC CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-RST7 (SOI and EOI are handled apart).
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])


class UnreadableImage(UserError, ValueError):
    """A file that cannot be used as an image; the message names it and says why."""


@dataclasses.dataclass(frozen=True)
class Header:
    """What an image file says about itself before it is decoded."""

    format: str  # "PNG" or "JPEG"
    width: int
    height: int
    channels: int  # as stored: 1 gray, 2 gray + alpha, 3 color, 4 RGBA (PNG) or CMYK (JPEG)

    @property
    def pixels(self) -> int:
        return self.width * self.height


def find(paths: list[str]) -> list[str]:
    """The files named and the PNG/JPEG files inside named directories (sorted), in order.

    Paths that are neither a directory nor a file are kept, for `load` to report.
    """
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, f) for f in os.listdir(path)
                            if f.lower().endswith(EXTENSIONS))
        else:
            files.append(path)
    if not files:
        raise NotFound(f"no PNG or JPEG images in {', '.join(paths)}.")
    return files


def read_header(f: BinaryIO) -> Header:
    """The format, size and channels of the PNG or JPEG image in `f`, from its header only."""
    start = f.read(8)
    if start == _PNG_SIGNATURE:
        return _png_header(f)
    if start[:2] == b"\xff\xd8":
        f.seek(2)
        return _jpeg_header(f)
    raise ValueError(f"not a PNG or JPEG image (it starts with {start[:8]!r}).")


def _png_header(f: BinaryIO) -> Header:
    chunk = f.read(8 + 13)
    if len(chunk) < 21 or chunk[4:8] != b"IHDR":
        raise ValueError("a PNG without its IHDR header chunk.")
    width, height, _, color_type = struct.unpack(">IIBB", chunk[8:18])
    if color_type not in _PNG_CHANNELS:
        raise ValueError(f"a PNG with an invalid color type {color_type}.")
    return _checked(Header("PNG", width, height, _PNG_CHANNELS[color_type]))


def _jpeg_header(f: BinaryIO) -> Header:
    while True:
        byte = f.read(1)
        if byte and byte != b"\xff":
            continue  # stray bytes between segments, which decoders skip too
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes before a marker
            marker = f.read(1)
        if not marker:
            raise ValueError("a JPEG that ends before its frame header (SOF).")
        if marker[0] in (0xD9, 0xDA):  # end of image, start of scan
            raise ValueError("a JPEG without a frame header (SOF) before its image data.")
        if marker[0] in _JPEG_STANDALONE:
            continue
        segment = f.read(8)
        if len(segment) < 8 and (marker[0] in _JPEG_SOF or len(segment) < 2):
            raise ValueError("a JPEG that ends before its frame header (SOF).")
        if marker[0] in _JPEG_SOF:
            _, _, height, width, channels = struct.unpack(">HBHHB", segment)
            return _checked(Header("JPEG", width, height, channels))
        (length,) = struct.unpack(">H", segment[:2])
        f.seek(length - len(segment), os.SEEK_CUR)  # to the end of this segment


def _checked(header: Header) -> Header:
    if header.width == 0 or header.height == 0:
        raise ValueError(f"a {header.format} whose header gives no size "
                         f"({header.width}x{header.height}).")
    return header


def check_size(header: Header, max_pixels: int = MAX_PIXELS) -> None:
    """ValueError when the header claims more than `max_pixels`, saying what decoding would cost."""
    if header.pixels > max_pixels:
        raise ValueError(
            f"its {header.format} header claims {header.width}x{header.height} pixels "
            f"({header.pixels * 3 / 1e9:.1f} GB decoded as RGB), more than the limit of "
            f"{max_pixels:,} pixels; refused before decoding.")


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [height, width, C] -> uint8 [*size, C], bilinear as keras.layers.Resizing does."""
    resized = tf.image.resize(image, size, method="bilinear", antialias=False)
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def load(path: str, size: tuple[int, int], max_pixels: int = MAX_PIXELS
         ) -> tuple[np.ndarray, list[str]]:
    """A uint8 [*size, 3] image from a PNG/JPEG file, and notes on what was changed.

    Raises UnreadableImage naming the file and the reason: missing or
    unreadable, not PNG/JPEG, a header over `max_pixels`, or data that do not decode.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the read forever
            raise UnreadableImage(f"{path}: not a regular file (a pipe, a device or a "
                                  "socket), so not read.")
        with open(path, "rb") as f:
            header = read_header(f)
            check_size(header, max_pixels)
            f.seek(0)
            contents = f.read()
    except OSError as e:
        raise UnreadableImage(f"{path}: {e.strerror or e}.") from None
    except ValueError as e:
        raise UnreadableImage(f"{path}: {e}") from None
    decode = tf.io.decode_png if header.format == "PNG" else tf.io.decode_jpeg
    try:
        image = decode(contents, channels=3).numpy()
    except tf.errors.OpError as e:
        reason = (e.message.strip().splitlines() or [type(e).__name__])[0]
        raise UnreadableImage(f"{path}: its {header.format} data do not decode ({reason})."
                              ) from None
    notes = []
    if header.format == "PNG" and header.channels in (2, 4):
        notes.append("alpha channel dropped")
    if header.channels in (1, 2):
        notes.append("grayscale, replicated to 3 channels")
    if image.shape[:2] != tuple(size):
        notes.append(f"resized from {image.shape[1]}x{image.shape[0]} to {size[1]}x{size[0]} "
                     "(bilinear, as keras.layers.Resizing)")
        image = resize(image, size)
    return image, notes
