"""The gateway's RTU framing and timing arithmetic (gateway/drivers/modbus.py), without a line."""

from __future__ import annotations

import asyncio

import pytest

from gateway.drivers import modbus
from gateway.drivers.modbus import Counters, LineTiming, _parse, _Waiter, bus_limit_s, rtu_frame


def test_crc_of_the_spec_example():
    assert rtu_frame(1, bytes.fromhex("030000000A")) == bytes.fromhex("01030000000AC5CD")
    assert modbus.crc16(rtu_frame(9, b"\x04\x00\x01\x00\x04")) == 0


@pytest.mark.parametrize(
    ("baud", "parity", "stopbits", "bits", "t35_ms"),
    [
        (19200, "E", 1, 11, 3.5 * 11 / 19.2),
        (9600, "N", 2, 11, 3.5 * 11 / 9.6),
        (9600, "N", 1, 10, 3.5 * 10 / 9.6),  # not RTU-conformant, but found in the field
        (38400, "E", 1, 11, 1.75),  # fixed above 19200 baud
        (115200, "O", 1, 11, 1.75),
    ],
)
def test_line_timing(baud: int, parity: str, stopbits: int, bits: int, t35_ms: float):
    timing = LineTiming.of(baud, parity, stopbits)
    assert timing.bits_per_char == bits
    assert timing.char_s == pytest.approx(bits / baud)
    assert timing.t35_s * 1000 == pytest.approx(t35_ms)


def test_bus_limit_for_32_nodes_at_19200():
    timing = LineTiming.of(19200)
    # 8 request + 13 reply bytes of 11 bits, two 3.5-character gaps, 0.5 ms turnaround.
    per_node = (21 * 11 + 2 * 3.5 * 11) / 19200 + 0.0005
    assert bus_limit_s(timing, 32, turnaround_s=0.0005) == pytest.approx(32 * per_node)
    assert bus_limit_s(timing, 32, turnaround_s=0.0005) == pytest.approx(0.52933, abs=1e-5)


async def _waiter(unit: int = 5, reply_len: int = 13) -> _Waiter:
    return _Waiter(unit, 0x04, reply_len, asyncio.get_running_loop().create_future())


def _reply(unit: int = 5, values: tuple[int, ...] = (1, 500, 80, 0xFFFF)) -> bytes:
    data = b"".join(v.to_bytes(2, "big") for v in values)
    return rtu_frame(unit, bytes((0x04, len(data))) + data)


async def test_a_reply_delivered_byte_by_byte_is_assembled():
    w = await _waiter()
    reply = _reply()
    for i in range(len(reply)):
        assert not w.future.done()
        w.buf.extend(reply[i:i + 1])
        _parse(w)
    assert w.future.result() == reply
    assert w.garbage == 0


async def test_leading_noise_is_skipped_and_counted():
    w = await _waiter()
    w.buf.extend(b"\x00\xff\x13" + _reply())
    _parse(w)
    assert w.future.result() == _reply()
    assert w.garbage == 3


async def test_noise_that_looks_like_the_address_is_skipped_too():
    w = await _waiter()
    w.buf.extend(b"\x05\x99" + _reply())  # 0x05 is the unit, 0x99 no function of ours
    _parse(w)
    assert w.future.result() == _reply()
    assert w.garbage == 2


async def test_a_damaged_reply_fails_its_crc_at_the_expected_length():
    w = await _waiter()
    damaged = bytearray(_reply())
    damaged[2] = 0x7F  # the byte count: the master does not trust it for the length
    w.buf.extend(damaged)
    _parse(w)
    with pytest.raises(modbus.CrcError):
        w.future.result()


async def test_an_exception_reply_is_five_bytes():
    w = await _waiter()
    w.buf.extend(rtu_frame(5, b"\x84\x02"))
    _parse(w)
    assert w.future.result() == rtu_frame(5, b"\x84\x02")


async def test_trailing_bytes_are_garbage():
    w = await _waiter()
    w.buf.extend(_reply() + b"\x01\x02")
    _parse(w)
    assert w.future.done()
    assert w.garbage == 2


def test_counters_add_by_field():
    counters = Counters()
    counters.add(modbus.CrcError.counter)
    counters.add(modbus.ReplyTimeout.counter, 2)
    counters.add("garbage_bytes", 5)
    assert counters.as_dict() == {"requests": 0, "replies": 0, "timeouts": 2, "crc_errors": 1,
                                  "garbage_bytes": 5, "exceptions": 0, "io_errors": 0}
