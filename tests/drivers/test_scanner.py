"""The barcode scanner driver: the line parser, and the driver over a real pty."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from parking_sim.tickets import SimScanner

from gateway.config import ScannerConfig
from gateway.drivers.scanner import QUEUE, BarcodeScanner, ScannerDown, ScanParser


def test_scans_end_with_cr_lf_or_both() -> None:
    parser = ScanParser(64)
    assert parser.feed(b"ONE\rTWO\nTHREE\r\n") == ["ONE", "TWO", "THREE"]
    assert parser.feed(b"\r\n\r") == []  # empty lines are no scans


def test_a_scan_split_across_reads_is_one_scan() -> None:
    parser = ScanParser(64)
    assert parser.feed(b"T1.abc") == []
    assert parser.feed(b"def\r") == ["T1.abcdef"]


def test_an_overlong_line_is_dropped_whole_and_counted() -> None:
    parser = ScanParser(16)
    assert parser.feed(b"X" * 40 + b"\rOK\r") == ["OK"]
    assert parser.too_long == 1


def test_control_and_non_ascii_bytes_are_refused_and_counted() -> None:
    parser = ScanParser(64)
    assert parser.feed(b"AB\x00C\r\xc3\xa9t\x1b\rGOOD\r") == ["GOOD"]
    assert parser.not_text == 2


@given(st.lists(st.binary(max_size=50), max_size=20))
def test_any_bytes_give_bounded_printable_scans(chunks: list[bytes]) -> None:
    parser = ScanParser(32)
    for chunk in chunks:
        for scan in parser.feed(chunk):
            assert 0 < len(scan) <= 32
            assert scan.isascii()
            assert scan.isprintable()


@pytest.fixture
async def sim() -> AsyncIterator[SimScanner]:
    scanner = SimScanner()
    await scanner.start()
    yield scanner
    await scanner.close()


async def test_scans_arrive_over_the_serial_line(sim: SimScanner) -> None:
    scanner = BarcodeScanner(ScannerConfig(port=sim.port, max_length=64))
    scanner.open()
    try:
        sim.scan("T1.first")
        sim.send_raw(b"\x00\x01garbage\r")
        sim.scan("T1.second")
        assert await asyncio.wait_for(scanner.next_scan(), 2) == "T1.first"
        assert await asyncio.wait_for(scanner.next_scan(), 2) == "T1.second"
        assert scanner.rejected == 1
    finally:
        scanner.close()


async def test_a_burst_keeps_the_newest_scans() -> None:
    scanner = BarcodeScanner(ScannerConfig(port="unused"))
    scanner._data(b"".join(f"S{i}\r".encode() for i in range(QUEUE + 3)))
    assert scanner.dropped == 3
    assert await scanner.next_scan() == "S3"


async def test_a_failed_line_is_reported_to_the_reader() -> None:
    scanner = BarcodeScanner(ScannerConfig(port="unused"))
    scanner._down("reading failed: I/O error")
    with pytest.raises(ScannerDown):
        await scanner.next_scan()


async def test_a_missing_port_cannot_be_opened(tmp_path: object) -> None:
    scanner = BarcodeScanner(ScannerConfig(port=f"{tmp_path}/no-such-tty"))
    with pytest.raises(OSError):  # noqa: PT011 (pyserial's SerialException is one)
        scanner.open()
