"""gateway.drivers.image: the one decoder, for camera snapshots, reader frames and CLI photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gateway.drivers import image
from gateway.drivers.image import BadImage, check_image, decode_image


def test_check_image_says_what_is_wrong() -> None:
    with pytest.raises(BadImage, match="too small: 1x1"):
        check_image(np.zeros((1, 1, 3), np.uint8))
    huge = np.lib.stride_tricks.as_strided(np.zeros(3, np.uint8), (10000, 10000, 3), (0, 0, 1))
    with pytest.raises(BadImage, match="too large: 10000x10000"):
        check_image(huge)
    with pytest.raises(BadImage, match="8-bit"):
        check_image(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(BadImage, match="not an image"):
        check_image(b"\x89PNG")


def test_decode_reads_the_declared_size_before_decoding() -> None:
    ok, jpeg = cv2.imencode(".jpg", np.zeros((20, 40, 3), np.uint8))
    assert ok
    data = bytearray(jpeg)
    # Rewrite the start-of-frame's height and width to 12000 x 12000: refused undecoded.
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (12000).to_bytes(2, "big") * 2
    with pytest.raises(BadImage, match="too large: 12000x12000"):
        decode_image(bytes(data))
    assert decode_image(bytes(jpeg)).shape == (20, 40, 3)


def test_more_bytes_than_the_cap_are_refused_undecoded(monkeypatch: pytest.MonkeyPatch) -> None:
    ok, jpeg = cv2.imencode(".jpg", np.zeros((20, 40, 3), np.uint8))
    assert ok
    monkeypatch.setattr(image, "MAX_BYTES", len(jpeg) - 1)
    with pytest.raises(BadImage, match=r"too large: .* MiB"):
        decode_image(bytes(jpeg))


@pytest.mark.parametrize(("ext", "match"), [(".jpg", "truncated JPEG"), (".png", "truncated PNG")])
def test_an_image_that_ends_early_is_refused(ext: str, match: str) -> None:
    ok, encoded = cv2.imencode(ext, np.full((64, 64, 3), 200, np.uint8))
    assert ok
    with pytest.raises(BadImage, match=match):
        decode_image(bytes(encoded)[: len(encoded) // 2])


@pytest.mark.parametrize("data", [b"", b"GIF89a" + bytes(100)], ids=["empty", "garbage"])
def test_nothing_readable_is_a_clear_error(data: bytes) -> None:
    with pytest.raises(BadImage, match=r"empty file|not a readable image"):
        decode_image(data)
