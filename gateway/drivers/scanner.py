"""A serial barcode scanner: each scan is a line of text ending with CR (or LF, or CR LF).

Scanners in serial (RS-232 or USB-CDC) mode send what they read followed by a configurable
suffix; the lane's is CR (docs/operations.md). :class:`ScanParser` splits the byte stream into
scans and refuses what cannot be one of ours: a line longer than `max_length` (noise, a
scanner in another mode: everything up to the next line end is dropped) or one holding a
control or non-ASCII character. Each refusal is counted, never raised: a scanner is outside,
within reach of anyone, and its input is untrusted.
"""

from __future__ import annotations

import asyncio

import structlog

from gateway.config import ScannerConfig
from gateway.drivers.serial_line import Opener, SerialLine, open_port

log = structlog.get_logger("gateway.drivers.scanner")

QUEUE = 8  # scans waiting for the lane at most; a burst beyond that keeps the newest


class ScannerDown(OSError):
    """The scanner's serial line failed; open it again."""


class ScanParser:
    """Bytes in, scanned texts out (pure: no I/O)."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self._buf = bytearray()
        self._overlong = False  # dropping the rest of a too-long line
        self.too_long = 0
        self.not_text = 0

    def feed(self, data: bytes) -> list[str]:
        scans: list[str] = []
        for byte in data:
            if byte in (0x0D, 0x0A):
                self._line_end(scans)
            elif self._overlong:
                continue
            elif len(self._buf) >= self.max_length:
                self._overlong = True
                self._buf.clear()
                self.too_long += 1
            else:
                self._buf.append(byte)
        return scans

    def _line_end(self, scans: list[str]) -> None:
        line, overlong = bytes(self._buf), self._overlong
        self._buf.clear()
        self._overlong = False
        if overlong or not line:
            return  # counted when it overflowed; an empty line is the LF of a CR LF
        if not all(0x20 <= b < 0x7F for b in line):
            self.not_text += 1
            return
        scans.append(line.decode("ascii").strip())


class BarcodeScanner:
    """One scanner on its serial port; :meth:`next_scan` waits for the next scan."""

    def __init__(self, config: ScannerConfig, *, opener: Opener = open_port) -> None:
        self.config = config
        self.parser = ScanParser(config.max_length)
        self._line = SerialLine(config.port, config.baudrate, on_data=self._data,
                                on_down=self._down, opener=opener)
        self._scans: asyncio.Queue[str | ScannerDown] = asyncio.Queue(QUEUE)
        self.scans = 0
        self.dropped = 0  # scans lost to a full queue

    @property
    def line(self) -> SerialLine:
        """The serial line, with its byte counts (a simulator waits on bytes in flight)."""
        return self._line

    @property
    def rejected(self) -> int:
        return self.parser.too_long + self.parser.not_text

    def open(self) -> None:
        """Open the port (again, after it went down); raises OSError if it cannot."""
        if not self._line.is_open:
            self._line.open()

    def close(self) -> None:
        self._line.close()

    async def next_scan(self) -> str:
        """The next scanned text; raises ScannerDown when the line failed meanwhile."""
        item = await self._scans.get()
        if isinstance(item, ScannerDown):
            raise item
        return item

    def _data(self, data: bytes) -> None:
        for text in self.parser.feed(data):
            self.scans += 1
            self._put(text)

    def _down(self, error: str) -> None:
        log.warning("scanner.line_down", port=self.config.port, error=error)
        self._put(ScannerDown(error))

    def _put(self, item: str | ScannerDown) -> None:
        if self._scans.full():
            self._scans.get_nowait()
            self.dropped += 1
        self._scans.put_nowait(item)
