"""The one image decoder: camera snapshots, frames handed to the plate reader, photos from the CLI.

Every image the gateway decodes comes from something it does not control (a camera's HTTP
answer, a file a technician names), so each is checked before it is decoded: a size cap in
bytes, the pixel count its header declares (a huge image is refused without allocating it),
and a JPEG or PNG that ends early is refused as truncated (OpenCV would decode it with the
missing part grey, and the reader would see half a car).
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

MIN_SIDE = 16  # pixels: nothing smaller holds a readable plate
MAX_PIXELS = 40_000_000  # a 12 MP camera is far below; a 10000x10000 frame is a mistake
MAX_BYTES = 32 * 1024 * 1024  # a 40 MP JPEG at the best quality is about 20 MB

Image = npt.NDArray[np.uint8]


class BadImage(ValueError):
    """An image that cannot be read as a plate photo; the message says why, for a person."""


def check_image(image: object) -> Image:
    """The image if it can be a frame: 8-bit, grey, BGR or BGRA, within `MIN_SIDE`/`MAX_PIXELS`.

    Raises `BadImage` with the reason. Grey and BGRA stay as they are (the reader converts).
    """
    if not isinstance(image, np.ndarray):
        raise BadImage(f"not an image array but {type(image).__name__}")
    if image.dtype != np.uint8:
        raise BadImage(f"pixels are {image.dtype}, not 8-bit")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise BadImage(f"shape {image.shape} is not grey, BGR or BGRA")
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise BadImage(f"image too small: {width}x{height} (at least {MIN_SIDE}x{MIN_SIDE})")
    _check_pixels(width, height)
    return image


def read_image_file(path: Path) -> bytes:
    """A photo file's bytes, at most `MAX_BYTES` of them; raises `BadImage` or OSError.

    Only a regular file is read: a FIFO would block (it is opened without waiting for a
    writer), and a device such as /dev/zero would never end.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadImage("not a regular file (a device, a FIFO or a socket)")
        data = file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise BadImage(f"image too large: over {MAX_BYTES / 2**20:.0f} MiB")
    return data


def decode_image(data: bytes) -> Image:
    """Decode a JPEG or PNG (or any format OpenCV reads) to BGR, or raise `BadImage` saying why."""
    if not data:
        raise BadImage("empty file")
    if len(data) > MAX_BYTES:
        raise BadImage(f"image too large: {len(data) / 2**20:.0f} MiB"
                       f" (at most {MAX_BYTES / 2**20:.0f} MiB)")
    declared = _declared_size(data)
    if declared is not None:
        _check_pixels(*declared)
    if data.startswith(_JPEG_START) and not data.rstrip(b"\0").endswith(_JPEG_END):
        raise BadImage("truncated JPEG (no end-of-image marker)")
    if data.startswith(_PNG_SIGNATURE) and b"IEND" not in data[-16:]:
        raise BadImage("truncated PNG (no IEND chunk)")
    import cv2  # here, not at the top: the daemon side of the reader decodes nothing

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or not image.size:
        raise BadImage("not a readable image (unknown format or corrupt data)")
    return check_image(image)


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise BadImage(f"image too large: {width}x{height} ({width * height / 1e6:.0f} MP,"
                       f" at most {MAX_PIXELS / 1e6:.0f} MP)")


_JPEG_START = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (C0-CF less DHT C4, JPG C8 and DAC CC) hold the image size.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's start-of-frame, without decoding."""
    if data.startswith(_PNG_SIGNATURE) and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if not data.startswith(_JPEG_START):
        return None
    pos = 2
    while pos + 9 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _SOF_MARKERS:
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return int(width), int(height)
        pos += 2 + length
    return None
