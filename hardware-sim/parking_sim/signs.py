"""Simulated ASCII count signs on an RS-485 line (a pty pair), as :mod:`parking_sim.bus` does
for the detector nodes.

The gateway opens :attr:`SignLine.port` (the pty's slave side) as a sign's serial port; the
simulator sits on the master side and plays every sign on the line: it decodes the frames
with the driver's own codec (``gateway.drivers.signs``), keeps what each sign shows, and
answers ACK (or NAK for a frame it cannot show) a turnaround after the frame, at the line's
character time. Faults on demand: signs that stay silent (a dead sign), noise before the
answers, answers one byte at a time. A frame whose checksum fails gets no answer, as on a
real sign.

    line = SignLine(addresses=[1, 2])
    port = await line.start()         # [[signs]] port = port, address = 1
    line.text(1)                      # "123", what sign 1 shows (None: nothing yet)
    line.silent.add(2)                # sign 2 loses power
    await line.close()

Under a virtual-time loop, hold the loop while bytes are in the kernel (``hold_while`` with
``bytes_received`` and ``bytes_sent`` against the gateway's line), as the bus does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.drivers.signs import AsciiFrame, FrameDecoder, FrameError, encode_reply


@dataclass(frozen=True, slots=True)
class Shown:
    """One frame a sign took: when (loop time its last byte arrived), what, how bright."""

    at: float
    text: str
    brightness: int


class SignLine:
    """ASCII signs at ``addresses`` on one simulated line."""

    def __init__(self, addresses: Iterable[int] = (1,), *, baudrate: int = 9600,
                 turnaround_s: float = 0.005) -> None:
        self.addresses = set(addresses)
        self.char_s = 10 / baudrate  # 8N1
        self.turnaround_s = turnaround_s
        self.shown: dict[int, Shown] = {}
        self.history: list[tuple[int, Shown]] = []  # every frame taken, oldest first
        self.silent: set[int] = set()  # signs that take nothing and answer nothing
        self.noise = b""  # sent before each answer (a transceiver glitch)
        self.byte_at_a_time = False
        self.frames = 0
        self.bad_frames = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.port = ""
        self._decoder = FrameDecoder()
        self._fd: int | None = None
        self._peer_fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.TimerHandle] = set()

    @property
    def garbage(self) -> int:
        return self._decoder.garbage

    def text(self, address: int = 1) -> str | None:
        """What the sign at `address` shows; None before its first frame."""
        shown = self.shown.get(address)
        return None if shown is None else shown.text

    async def start(self) -> str:
        """Open the pty pair and serve; returns the port the gateway opens."""
        self._loop = asyncio.get_running_loop()
        master, peer = os.openpty()
        tty.setraw(peer)  # no echo, no CR/LF translation: a clean 8-bit line
        os.set_blocking(master, False)
        self._fd, self._peer_fd = master, peer
        self.port = os.ttyname(peer)
        self._loop.add_reader(master, self._on_readable)
        return self.port

    async def close(self) -> None:
        if self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        for fd in (self._fd, self._peer_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._peer_fd = None

    def _on_readable(self) -> None:
        assert self._loop is not None
        assert self._fd is not None
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the gateway closed the port (EIO on a pty): wait for it to reopen
            return
        self.bytes_received += len(data)
        now = self._loop.time()
        for frame in self._decoder.feed(data):
            self._take(frame, now)

    def _take(self, frame: AsciiFrame | FrameError, now: float) -> None:
        if isinstance(frame, FrameError):
            self.bad_frames += 1
            if frame.address in self.addresses and frame.address not in self.silent:
                self._answer(encode_reply(frame.address, ok=False))
            return
        if frame.address not in self.addresses or frame.address in self.silent:
            return
        self.frames += 1
        shown = Shown(now, frame.text, frame.brightness)
        self.shown[frame.address] = shown
        self.history.append((frame.address, shown))
        self._answer(encode_reply(frame.address, ok=True))

    def _answer(self, reply: bytes) -> None:
        assert self._loop is not None
        data = self.noise + reply
        start = self._loop.time() + self.turnaround_s
        if self.byte_at_a_time:
            for i in range(len(data)):
                self._send_at(start + (i + 1) * self.char_s, data[i:i + 1])
        else:
            self._send_at(start + len(data) * self.char_s, data)

    def _send_at(self, when: float, data: bytes) -> None:
        assert self._loop is not None
        handle: asyncio.TimerHandle

        def send() -> None:
            self._pending.discard(handle)
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    self.bytes_sent += os.write(self._fd, data)

        handle = self._loop.call_at(when, send)
        self._pending.add(handle)
