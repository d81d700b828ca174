"""The sign drivers: the ASCII frame codec (pure, fuzzed), and both kinds of sign over a real
pty against a fake sign (the simulator's ASCII signs, a small Modbus slave here)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from parking_sim.signs import SignLine

from gateway.config import SignConfig
from gateway.core.signs import Display
from gateway.drivers.modbus import crc16, rtu_frame
from gateway.drivers.signs import (
    AsciiFrame,
    FrameDecoder,
    FrameError,
    ModbusSign,
    SignLinkDown,
    SignRefused,
    SignTimeout,
    checksum,
    decode_frame,
    encode_frame,
    encode_reply,
    open_signs,
    take_reply,
)
from tests.fuzz import FUZZ

COUNT = Display("count", 123, 80)


# --- the codec -------------------------------------------------------------------------------


def test_the_documented_example_frame() -> None:
    frame = encode_frame(1, 80, "123")
    assert frame[:1] == b"\x02"
    assert frame[-3:-2] == b"\x03"
    assert frame[1:-3] == b"01;080;123"
    assert frame[-2:] == b"0A" == b"%02X" % checksum(b"01;080;123\x03")  # as documented
    assert decode_frame(frame) == AsciiFrame(1, 80, "123")


@pytest.mark.parametrize(("address", "brightness", "text"), [
    (0, 50, "1"), (100, 50, "1"), (1, 101, "1"), (1, -1, "1"), (1, 50, "x" * 17),
    (1, 50, "\x03"), (1, 50, "é")])
def test_what_no_frame_can_carry_is_refused(address: int, brightness: int, text: str) -> None:
    with pytest.raises(ValueError, match=r"address|brightness|text"):
        encode_frame(address, brightness, text)


def test_a_damaged_frame_fails_its_checksum_and_names_no_address() -> None:
    frame = bytearray(encode_frame(7, 100, "FULL"))
    frame[5] ^= 0x01
    with pytest.raises(FrameError) as caught:
        decode_frame(bytes(frame))
    assert caught.value.address is None


def test_a_bad_field_with_a_good_checksum_names_its_address() -> None:
    body = b"07;250;12\x03"  # brightness over 100
    with pytest.raises(FrameError) as caught:
        decode_frame(b"\x02" + body + b"%02X" % checksum(body))
    assert caught.value.address == 7


def test_the_decoder_finds_frames_among_noise_and_split_deliveries() -> None:
    decoder = FrameDecoder()
    stream = b"\xff\x00" + encode_frame(1, 100, "42") + b"\x02junk" + encode_frame(2, 0, "")
    found: list[Any] = []
    for i in range(len(stream)):  # one byte at a time
        found += decoder.feed(stream[i:i + 1])
    assert found == [AsciiFrame(1, 100, "42"), AsciiFrame(2, 0, "")]
    assert decoder.garbage == 2 + 5


def test_a_reply_is_found_after_garbage_and_another_signs_answer() -> None:
    buf = bytearray(b"\x00\x06" + encode_reply(3, True) + encode_reply(5, False))
    assert take_reply(buf, 5) == (False, 5)
    assert not buf
    partial = bytearray(b"\x0605")
    assert take_reply(partial, 5) == (True, 0)
    assert take_reply(bytearray(b"\x06"), 5) == (None, 0)


@FUZZ
@given(st.binary(max_size=300))
def test_garbage_never_crashes_the_decoder(data: bytes) -> None:
    decoder = FrameDecoder()
    for item in decoder.feed(data):
        assert isinstance(item, AsciiFrame | FrameError)


@FUZZ
@given(st.binary(max_size=100), st.integers(1, 99))
def test_garbage_never_crashes_the_reply_reader(data: bytes, address: int) -> None:
    buf = bytearray(data)
    ok, garbage = take_reply(buf, address)
    assert ok in (True, False, None)
    assert 0 <= garbage <= len(data)


@FUZZ
@given(st.integers(1, 99), st.integers(0, 100),
       st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=16))
def test_every_frame_decodes_to_what_was_encoded(address: int, brightness: int,
                                                 text: str) -> None:
    assert decode_frame(encode_frame(address, brightness, text)) == AsciiFrame(
        address, brightness, text)


# --- an ASCII sign on a pty ------------------------------------------------------------------


def ascii_config(port: str, address: int = 1, **kw: Any) -> SignConfig:
    return SignConfig(id=f"s{address}", kind="ascii", port=port, address=address,
                      timeout_ms=100, **kw)


@pytest.fixture
async def line() -> AsyncIterator[SignLine]:
    sim = SignLine(addresses=[1, 2])
    await sim.start()
    yield sim
    await sim.close()


async def test_a_sign_shows_the_frame_and_acknowledges(line: SignLine) -> None:
    signs = open_signs([ascii_config(line.port, 1), ascii_config(line.port, 2)])
    try:
        await signs["s1"].show(COUNT)
        await signs["s2"].show(Display("full", None, 50))
        assert line.text(1) == "123"
        assert line.shown[1].brightness == 80
        assert line.text(2) == "FULL"
        assert signs["s1"].counters.replies == 1
    finally:
        for sign in signs.values():
            await sign.close()


async def test_a_silent_sign_times_out_and_is_counted(line: SignLine) -> None:
    line.silent.add(1)
    sign = open_signs([ascii_config(line.port, 1)])["s1"]
    try:
        with pytest.raises(SignTimeout):
            await sign.show(COUNT)
        assert sign.counters.timeouts == 1
        line.silent.clear()
        await sign.show(COUNT)  # answers again: nothing stuck
        assert line.text(1) == "123"
    finally:
        await sign.close()


async def test_noise_and_byte_at_a_time_answers_are_taken(line: SignLine) -> None:
    line.noise, line.byte_at_a_time = b"\x00\x15\xff", True
    sign = open_signs([ascii_config(line.port, 1)])["s1"]
    try:
        await sign.show(COUNT)
        assert sign.counters.garbage_bytes == 3
    finally:
        await sign.close()


async def test_a_nak_is_a_refusal(line: SignLine) -> None:
    sign = open_signs([ascii_config(line.port, 1)])["s1"]
    try:
        # A frame the sign cannot show, though its checksum holds: straight onto the line.
        body = b"01;999;1\x03"
        frame = b"\x02" + body + b"%02X" % checksum(body)
        with pytest.raises(SignRefused):
            await sign.line.transact(frame, 1, sign.counters)  # type: ignore[attr-defined]
        assert sign.counters.exceptions == 1
        assert line.bad_frames == 1
    finally:
        await sign.close()


async def test_a_missing_port_is_a_link_fault_tried_again_later(tmp_path: Any) -> None:
    sign = open_signs([ascii_config(str(tmp_path / "ttyUSB9"), 1)])["s1"]
    with pytest.raises(SignLinkDown):
        await sign.show(COUNT)
    assert sign.counters.io_errors == 1
    await sign.close()


# --- a Modbus sign on a pty ------------------------------------------------------------------


class ModbusSlave:
    """A Modbus sign: holding registers, 0x06 and 0x10, one request at a time."""

    def __init__(self, unit: int) -> None:
        self.unit = unit
        self.registers: dict[int, int] = {}
        self.exception: int | None = None
        self._buf = bytearray()
        master, peer = os.openpty()
        tty.setraw(peer)
        os.set_blocking(master, False)
        self.fd, self.peer = master, peer
        self.port = os.ttyname(peer)
        asyncio.get_running_loop().add_reader(master, self._readable)

    def _readable(self) -> None:
        with contextlib.suppress(OSError):
            self._buf.extend(os.read(self.fd, 512))
        need = 15 if len(self._buf) > 1 and self._buf[1] == 0x10 else 8
        if len(self._buf) < need:
            return
        frame, self._buf = bytes(self._buf[:need]), bytearray()
        assert crc16(frame) == 0
        assert frame[0] == self.unit
        function, start = frame[1], int.from_bytes(frame[2:4], "big")
        if self.exception is not None:
            reply = rtu_frame(self.unit, bytes((function | 0x80, self.exception)))
        elif function == 0x06:
            self.registers[start] = int.from_bytes(frame[4:6], "big")
            reply = frame
        else:
            for i in range(3):
                self.registers[start + i] = int.from_bytes(frame[7 + 2 * i:9 + 2 * i], "big")
            reply = rtu_frame(self.unit, frame[1:6])
        os.write(self.fd, reply)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)
        os.close(self.peer)


@pytest.mark.parametrize("function", [16, 6])
async def test_a_modbus_sign_gets_count_mode_and_brightness(function: int) -> None:
    slave = ModbusSlave(9)
    config = SignConfig(id="m", kind="modbus", port=slave.port, unit_id=9, first_register=40,
                        write_function=function, timeout_ms=100)  # type: ignore[arg-type]
    sign = open_signs([config])["m"]
    assert isinstance(sign, ModbusSign)
    try:
        await sign.show(COUNT)
        assert slave.registers == {40: 123, 41: 0, 42: 80}
        await sign.show(Display("closed", None, 30))
        assert slave.registers == {40: 0xFFFF, 41: 2, 42: 30}
        slave.exception = 2
        with pytest.raises(SignRefused):
            await sign.show(COUNT)
        assert sign.counters.exceptions == 1
    finally:
        await sign.close()
        slave.close()
