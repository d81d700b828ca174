"""Fuzzing the drivers' parsers of outside bytes: Modbus RTU replies and images.

Whatever the wire or a file holds, the parser answers with a result or its own clear error,
never another exception, and accounts for every byte.
"""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from gateway.drivers.image import MAX_PIXELS, BadImage, decode_image
from gateway.drivers.modbus import CrcError, _parse, _Waiter, crc16, rtu_frame
from tests.fuzz import FUZZ

UNIT, FUNCTION, REPLY_LEN = 7, 0x04, 9  # read 2 input registers: 1+1+1+4+2 bytes


def _waiter(loop: asyncio.AbstractEventLoop) -> _Waiter:
    return _Waiter(UNIT, FUNCTION, REPLY_LEN, loop.create_future())


def _feed(chunks: list[bytes]) -> tuple[_Waiter, int]:
    """Feed `chunks` as they would arrive; return the waiter and the bytes fed before it
    settled."""
    loop = asyncio.new_event_loop()
    try:
        w = _waiter(loop)
        fed = 0
        for chunk in chunks:
            if w.future.done():
                break
            w.buf.extend(chunk)
            fed += len(chunk)
            _parse(w)
        return w, fed
    finally:
        loop.close()


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=12))
def test_any_bytes_on_the_line_settle_a_reply_at_most_once_and_are_accounted_for(
        chunks: list[bytes]) -> None:
    w, fed = _feed(chunks)
    if not w.future.done():
        assert w.garbage + len(w.buf) == fed  # still waiting: each byte skipped or kept
        return
    error = w.future.exception()
    if error is None:
        frame = w.future.result()
        assert (frame[0], frame[1], len(frame)) == (UNIT, FUNCTION, REPLY_LEN)
        assert crc16(frame) == 0
        assert w.garbage == fed - REPLY_LEN
    else:
        assert isinstance(error, CrcError)


@FUZZ
@given(noise=st.binary(max_size=30), payload=st.binary(min_size=4, max_size=4),
       split=st.integers(0, 40))
def test_a_good_reply_after_noise_is_found_wherever_the_chunks_break(
        noise: bytes, payload: bytes, split: int) -> None:
    reply = rtu_frame(UNIT, bytes([FUNCTION, 4]) + payload)
    # Noise that cannot start the reply (a stray unit byte would be taken for one, as on a
    # real line): the reply after it is found however the bytes arrive.
    clean = bytes(b for b in noise if b != UNIT)
    stream = clean + reply
    cut = min(split, len(stream))
    w, _ = _feed([stream[:cut], stream[cut:]])
    assert w.future.result() == reply
    assert w.garbage == len(clean)


def _png(width: int, height: int) -> bytes:
    ok, data = cv2.imencode(".png", np.full((height, width, 3), 128, np.uint8))
    assert ok
    return bytes(data)


def _jpeg(width: int, height: int) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))
    assert ok
    return bytes(data)


SEEDS = [_png(40, 30), _jpeg(40, 30)]


def _decoded(data: bytes) -> np.ndarray | BadImage:
    """The image, or the BadImage that refused it (any other exception fails the test)."""
    try:
        return decode_image(data)
    except BadImage as e:
        return e


def _check(result: np.ndarray | BadImage) -> None:
    if isinstance(result, BadImage):
        assert str(result)  # a message for a person
    else:
        assert result.dtype == np.uint8
        assert result.shape[0] * result.shape[1] <= MAX_PIXELS


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_are_an_image_or_a_bad_image(data: bytes) -> None:
    _check(_decoded(data))


@FUZZ
@given(seed=st.sampled_from(SEEDS), at=st.integers(0, 10_000), value=st.integers(0, 255),
       cut=st.integers(0, 10_000), repeat=st.integers(1, 8))
def test_damaged_photos_are_an_image_or_a_bad_image(seed: bytes, at: int, value: int, cut: int,
                                                    repeat: int) -> None:
    data = bytearray(seed)
    for k in range(repeat):  # a few bytes changed, then perhaps cut short
        data[(at * (k + 1)) % len(data)] = (value + 37 * k) % 256
    _check(_decoded(bytes(data[:max(1, cut % (len(data) + 1))])))


@FUZZ
@given(width=st.integers(1, 2**31 - 1), height=st.integers(1, 2**31 - 1))
def test_a_header_declaring_a_huge_image_is_refused_before_decoding(width: int,
                                                                    height: int) -> None:
    data = bytearray(_png(40, 30))
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    result = _decoded(bytes(data))
    _check(result)
    if width * height > MAX_PIXELS:
        assert isinstance(result, BadImage)
        assert "too large" in str(result)
