"""A simulated ESC/POS ticket printer and a serial barcode scanner, each on a pty pair.

The gateway opens :attr:`SimPrinter.port` / :attr:`SimScanner.port` (the pty's slave side) as it
opens ``/dev/ttyUSB1`` on a lot; the simulator sits on the master side.

The printer decodes what a lane sends: text lines, the QR code's stored payload (``GS ( k``
fn 80) and its print (fn 81), and the cut (``GS V``) that ends a ticket, keeping every printed
ticket; it answers the real-time status requests (``DLE EOT n``) from its paper roll (tickets
left, near-end, empty), cover and error state, or not at all when `silent`. A printer out of
paper prints nothing, as a real one does. The scanner "reads" a ticket: it sends its text and a
CR, as a scanner with the CR suffix does; garbage and overlong lines can be sent too::

    printer = SimPrinter(paper=50)
    await printer.start()             # PrinterConfig(port=printer.port)
    printer.tickets[-1].qr            # the QR payload of the last ticket printed
    printer.paper = 0                 # the roll runs out
    scanner = SimScanner(); await scanner.start()
    scanner.scan(printer.tickets[-1].qr)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable
from dataclasses import dataclass, field

ESC, GS, DLE, EOT, LF = 0x1B, 0x1D, 0x10, 0x04, 0x0A
NEAR_END_AT = 20  # tickets left when the near-end sensor trips (a few metres of paper)


@dataclass
class PrintedTicket:
    """One ticket as it left the printer."""

    lines: list[str] = field(default_factory=list)
    qr: str | None = None


class _Pty:
    """The master side of a raw pty pair; the slave's path is what the gateway opens."""

    def __init__(self) -> None:
        self._master: int | None = None
        self._peer: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = ""
        # What crossed the pty, for virtual time to wait on bytes still in the kernel.
        self.bytes_received = 0
        self.bytes_sent = 0

    def start(self, on_data: object = None) -> str:
        master, peer = os.openpty()
        tty.setraw(peer)  # no echo, no CR/LF translation: a clean 8-bit line
        os.set_blocking(master, False)
        self._master, self._peer = master, peer
        self.port = os.ttyname(peer)
        self._loop = asyncio.get_running_loop()
        if callable(on_data):
            self._loop.add_reader(master, self._readable, on_data)
        return self.port

    def _readable(self, on_data: object) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the gateway side closed: nothing to read until it opens again
            return
        self.bytes_received += len(data)
        if data and callable(on_data):
            on_data(data)

    def write(self, data: bytes) -> None:
        if self._master is not None:
            self.bytes_sent += os.write(self._master, data)

    def close(self) -> None:
        if self._loop is not None and self._master is not None:
            self._loop.remove_reader(self._master)
        for fd in (self._master, self._peer):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._peer = None


class _PtyDevice:
    """A device at the end of a pty: the port the gateway opens and the bytes that crossed it."""

    def __init__(self) -> None:
        self._pty = _Pty()

    @property
    def port(self) -> str:
        return self._pty.port

    @property
    def bytes_received(self) -> int:
        return self._pty.bytes_received

    @property
    def bytes_sent(self) -> int:
        return self._pty.bytes_sent

    def _listener(self) -> Callable[[bytes], None] | None:
        """What takes the bytes the gateway writes; None: a device that only talks."""
        return None

    async def start(self) -> str:
        return self._pty.start(self._listener())

    async def close(self) -> None:
        self._pty.close()


class SimPrinter(_PtyDevice):
    """An ESC/POS thermal printer with a finite roll. `paper`: tickets left (None: endless)."""

    def __init__(self, *, paper: int | None = None) -> None:
        super().__init__()
        self.paper = paper
        self.cover_open = False
        self.error = False  # a cutter jam, an overheated head
        self.silent = False  # answers nothing (switched off, wrong baud rate)
        self.tickets: list[PrintedTicket] = []
        self.status_requests = 0
        # Told of every ticket that comes out (the simulated driver takes it).
        self.on_ticket: Callable[[PrintedTicket], None] | None = None
        self._buf = bytearray()
        self._current = PrintedTicket()
        self._line = bytearray()
        self._stored_qr: bytes | None = None

    @property
    def out_of_paper(self) -> bool:
        return self.paper is not None and self.paper <= 0

    @property
    def near_end(self) -> bool:
        return self.paper is not None and self.paper <= NEAR_END_AT

    # --- the command stream ---

    def _listener(self) -> Callable[[bytes], None]:
        return self._data

    def _data(self, data: bytes) -> None:
        self._buf += data
        while self._buf:
            used = self._command(self._buf)
            if used == 0:
                return  # an incomplete command: wait for its rest
            del self._buf[:used]

    def _command(self, buf: bytearray) -> int:
        """Act on the command at the start of `buf`; the bytes it took (0: incomplete)."""
        first = buf[0]
        if first == DLE:
            if len(buf) < 3:
                return 0
            if buf[1] == EOT:
                self._status(buf[2])
            return 3
        if first == ESC:
            if len(buf) < 2:
                return 0
            if buf[1] == 0x40:  # ESC @: initialise
                self._current, self._line = PrintedTicket(), bytearray()
                return 2
            return 3 if len(buf) >= 3 else 0  # ESC a n, ESC E n, ESC d n: layout only
        if first == GS:
            return self._gs(buf)
        if first == LF:
            self._current.lines.append(self._line.decode("cp437"))
            self._line = bytearray()
            return 1
        self._line.append(first)
        return 1

    def _gs(self, buf: bytearray) -> int:
        if len(buf) < 2:
            return 0
        if buf[1] == 0x28 and len(buf) >= 3 and buf[2] == 0x6B:  # GS ( k: a 2D code
            if len(buf) < 5:
                return 0
            size = buf[3] | buf[4] << 8
            if len(buf) < 5 + size:
                return 0
            body = bytes(buf[5:5 + size])  # cn fn [m] data
            if body[:2] == b"\x31\x50":  # fn 80: store the QR code's data
                self._stored_qr = body[3:]
            elif body[:2] == b"\x31\x51" and self._stored_qr is not None:  # fn 81: print it
                self._current.qr = self._stored_qr.decode("ascii", errors="replace")
            return 5 + size
        if buf[1] == 0x56:  # GS V m [n]: cut
            if len(buf) < 3:
                return 0
            used = 4 if buf[2] in (65, 66) else 3
            if len(buf) < used:
                return 0
            self._cut()
            return used
        return 2

    def _cut(self) -> None:
        ticket, self._current = self._current, PrintedTicket()
        if self.out_of_paper or self.cover_open or self.error:
            return  # nothing comes out
        self.tickets.append(ticket)
        if self.paper is not None:
            self.paper -= 1
        if self.on_ticket is not None:
            self.on_ticket(ticket)

    def _status(self, n: int) -> None:
        self.status_requests += 1
        if self.silent:
            return
        byte = 0x12
        if n == 1:
            byte |= 0x08 if (self.out_of_paper or self.cover_open or self.error) else 0
        elif n == 2:
            byte |= ((0x04 if self.cover_open else 0) | (0x20 if self.out_of_paper else 0)
                     | (0x40 if self.error else 0))
        elif n == 4:
            byte |= (0x0C if self.near_end else 0) | (0x60 if self.out_of_paper else 0)
        self._pty.write(bytes([byte]))


class SimScanner(_PtyDevice):
    """A serial barcode scanner with the CR suffix."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def scan(self, text: str) -> None:
        """The driver holds a ticket under the scanner: its text and a CR."""
        self.sent.append(text)
        self._pty.write(text.encode("ascii") + b"\r")

    def send_raw(self, data: bytes) -> None:
        """Whatever else reaches the line: noise, a label in another mode, half a scan."""
        self._pty.write(data)
