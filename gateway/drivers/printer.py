"""A small ESC/POS ticket printer driver over a serial line.

Only what a lane's ticket needs, so no dependency (python-escpos is not in the lock): initialise
(``ESC @``), centred text lines, a QR code (``GS ( k``: model 2, module size, error correction M,
store, print), feed and a partial cut (``GS V 66``), and the real-time status requests
(``DLE EOT n``), which every ESC/POS printer answers with one byte even while it is offline.

Before each ticket the printer is asked for its paper sensor (``DLE EOT 4``: near-end and
roll-end bits) and its offline cause (``DLE EOT 2``: cover open, stopped at paper end, an error):
a ticket is never sent to a printer that cannot print it, and the lane learns why.

Errors are typed, for the lane's alarms: :class:`PaperOut` (``printer.paper_out``),
:class:`PrinterFault` (``printer.fault``) and, a fault too, :class:`PrinterNoAnswer` (no status
byte within the timeout: unplugged, off, wrong baud rate).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from gateway.config import PrinterConfig
from gateway.drivers.serial_line import LineDown, Opener, SerialLine, open_port

log = structlog.get_logger("gateway.drivers.printer")

ESC, GS, DLE, EOT, LF = 0x1B, 0x1D, 0x10, 0x04, 0x0A
LINE_WIDTH = 42  # characters a line: within font A's 48 on 80 mm paper
MAX_QR_BYTES = 512  # far above a ticket's 66; the QR model 2 store command allows 7089
WRITE_TIMEOUT_S = 5.0  # a ticket is ~250 bytes: a fraction of a second at 9600 baud

# DLE EOT 4 (paper roll sensor): near-end bits 2-3, roll-end bits 5-6.
PAPER_NEAR_END = 0x0C
PAPER_END = 0x60
# DLE EOT 2 (offline cause): cover open, stopped by paper end, an error occurred.
COVER_OPEN = 0x04
STOPPED_PAPER_END = 0x20
ERROR_OCCURRED = 0x40


class PrinterError(Exception):
    """The printer cannot print a ticket now."""


class PaperOut(PrinterError):
    """The roll is empty (the paper-end sensor, or the printer stopped for it)."""


class PrinterFault(PrinterError):
    """The printer is offline for another reason, or its answers make no sense."""


class PrinterNoAnswer(PrinterFault):
    """No status byte within the timeout: the printer is off, unplugged, or at another baud."""


@dataclass(frozen=True, slots=True)
class PaperStatus:
    """The paper sensor's reading; `near_end`: a warning, the printer still prints."""

    near_end: bool


def status_ok(byte: int) -> bool:
    """A real-time status byte has bit 1 and bit 4 set, bit 0 and bit 7 clear."""
    return byte & 0x93 == 0x12


def text_line(text: str) -> bytes:
    """One printable line: code page 437 (the printers' default), cut to the paper's width."""
    clean = "".join(c if c.isprintable() else " " for c in text)[:LINE_WIDTH]
    return clean.encode("cp437", errors="replace") + bytes([LF])


def qr_code(data: str, module_dots: int) -> bytes:
    """``GS ( k``: select model 2, set the module size, error correction M, store, print."""
    payload = data.encode("ascii")
    if not payload or len(payload) > MAX_QR_BYTES:
        raise ValueError(f"a QR payload of 1 to {MAX_QR_BYTES} bytes, not {len(payload)}")
    if not 1 <= module_dots <= 16:
        raise ValueError(f"a QR module of 1 to 16 dots, not {module_dots}")
    size = len(payload) + 3
    return b"".join((
        bytes([GS, 0x28, 0x6B, 4, 0, 0x31, 0x41, 0x32, 0x00]),  # fn 165: model 2
        bytes([GS, 0x28, 0x6B, 3, 0, 0x31, 0x43, module_dots]),  # fn 167: module size
        bytes([GS, 0x28, 0x6B, 3, 0, 0x31, 0x45, 0x31]),  # fn 169: error correction M (15%)
        bytes([GS, 0x28, 0x6B, size & 0xFF, size >> 8, 0x31, 0x50, 0x30]) + payload,  # fn 180
        bytes([GS, 0x28, 0x6B, 3, 0, 0x31, 0x51, 0x30]),  # fn 181: print the stored symbol
    ))


def ticket(lines: Sequence[str], qr: str, *, module_dots: int = 6, bold_first: bool = True
           ) -> bytes:
    """A whole ticket: initialise, centred lines (the first bold), the QR code, feed and cut."""
    out = bytearray([ESC, 0x40, ESC, 0x61, 0x01])  # ESC @, ESC a 1 (centre)
    for i, line in enumerate(lines):
        bold = bold_first and i == 0
        out += bytes([ESC, 0x45, 1]) if bold else b""
        out += text_line(line)
        out += bytes([ESC, 0x45, 0]) if bold else b""
    out += bytes([LF]) + qr_code(qr, module_dots) + bytes([LF])
    out += bytes([ESC, 0x64, 4])  # ESC d 4: feed past the cutter
    out += bytes([GS, 0x56, 66, 0])  # GS V 66 0: partial cut
    return bytes(out)


class EscPosPrinter:
    """One printer on its serial port. Opened on first use, and again after the line failed."""

    def __init__(self, config: PrinterConfig, *, opener: Opener = open_port) -> None:
        self.config = config
        self.timeout_s = config.timeout_ms / 1000
        self._line = SerialLine(config.port, config.baudrate, on_data=self._data,
                                on_down=self._down, opener=opener)
        self._answer: asyncio.Future[int] | None = None
        self._lock = asyncio.Lock()  # one exchange at a time: a status poll waits for a ticket
        self.printed = 0
        self.garbage_bytes = 0  # bytes nobody asked for (a late answer, noise)

    async def check(self) -> PaperStatus:
        """The paper and offline status; raises PaperOut, PrinterFault or PrinterNoAnswer."""
        async with self._lock:
            return await self._check()

    async def print_ticket(self, lines: Sequence[str], qr: str) -> PaperStatus:
        """Print one ticket if the printer can; the paper status it had before.

        Raises PaperOut or PrinterFault (PrinterNoAnswer) and prints nothing when it cannot.
        """
        data = ticket(lines, qr, module_dots=self.config.qr_module_dots)
        async with self._lock:
            paper = await self._check()
            try:
                await self._line.write(data, WRITE_TIMEOUT_S)
            except LineDown as e:
                raise PrinterFault(str(e)) from None
            self.printed += 1
            return paper

    @property
    def line(self) -> SerialLine:
        """The serial line, with its byte counts (a simulator waits on bytes in flight)."""
        return self._line

    def close(self) -> None:
        self._line.close()

    async def _check(self) -> PaperStatus:
        self._ensure_open()
        paper = await self._status(4)
        if paper & PAPER_END:
            raise PaperOut("the paper roll is empty")
        cause = await self._status(2)
        if cause & STOPPED_PAPER_END:
            raise PaperOut("the printer stopped at the paper end")
        if cause & COVER_OPEN:
            raise PrinterFault("the printer's cover is open")
        if cause & ERROR_OCCURRED:
            raise PrinterFault("the printer reports an error (cutter, head temperature)")
        return PaperStatus(near_end=bool(paper & PAPER_NEAR_END))

    def _ensure_open(self) -> None:
        if self._line.is_open:
            return
        try:
            self._line.open()
        except OSError as e:
            raise PrinterFault(f"cannot open {self.config.port}: {e.strerror or e}") from None

    async def _status(self, n: int) -> int:
        """``DLE EOT n``, and the one byte that answers it."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[int] = loop.create_future()
        self._answer = answer
        try:
            try:
                await self._line.write(bytes([DLE, EOT, n]), self.timeout_s)
            except LineDown as e:
                raise PrinterFault(str(e)) from None
            try:
                byte = await asyncio.wait_for(answer, self.timeout_s)
            except TimeoutError:
                raise PrinterNoAnswer(f"no answer to a status request within "
                                      f"{self.config.timeout_ms} ms") from None
        finally:
            self._answer = None
        if not status_ok(byte):
            raise PrinterFault(f"a garbled status byte 0x{byte:02x}")
        return byte

    def _data(self, data: bytes) -> None:
        answer = self._answer
        if answer is None or answer.done():
            self.garbage_bytes += len(data)
            return
        answer.set_result(data[0])
        self.garbage_bytes += len(data) - 1

    def _down(self, error: str) -> None:
        log.warning("printer.line_down", port=self.config.port, error=error)
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(PrinterFault(error))
