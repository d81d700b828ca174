"""A plain serial line on the running loop: the ticket printer's and the scanner's.

Opened by pyserial (line settings, an exclusive lock), then read and written through its file
descriptor with the loop's reader and writer callbacks, as :class:`gateway.drivers.modbus.RtuLink`
does: nothing blocks the loop, nothing runs in a thread. A read that fails (a USB adapter
pulled out) closes the line and tells the owner, who decides when to open it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

import serial  # type: ignore[import-untyped]

Opener = Callable[[str, int], Any]
"""``opener(port, baudrate)``: an open port object with ``fileno()`` and ``close()``."""


class LineDown(OSError):
    """The serial line is not open, or writing to it failed."""


def open_port(port: str, baudrate: int) -> Any:
    """8N1, no handshake, non-blocking; exclusive, so a second process cannot share it."""
    return serial.serial_for_url(port, baudrate=baudrate, bytesize=8, parity="N", stopbits=1,
                                 timeout=0, write_timeout=0, exclusive=True)


class SerialLine:
    """One serial port. `on_data` gets every chunk read; `on_down` hears that a read failed."""

    def __init__(self, port: str, baudrate: int, *, on_data: Callable[[bytes], None],
                 on_down: Callable[[str], None] | None = None, opener: Opener = open_port
                 ) -> None:
        self.port = port
        self.baudrate = baudrate
        self._on_data = on_data
        self._on_down = on_down
        self._opener = opener
        self._handle: Any = None
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bytes_read = 0
        self.bytes_written = 0

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def open(self) -> None:
        """Open the port; raises OSError (pyserial's SerialException is one) if it cannot."""
        self._loop = asyncio.get_running_loop()
        self._handle = self._opener(self.port, self.baudrate)
        self._fd = int(self._handle.fileno())
        os.set_blocking(self._fd, False)
        self._loop.add_reader(self._fd, self._readable)

    def close(self) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._fd = None
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None

    async def write(self, data: bytes, timeout_s: float) -> None:
        """Hand `data` to the port, waiting while its output buffer is full, for at most
        `timeout_s` in all; raises LineDown if the line is closed, fails or stays full."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        view = memoryview(data)
        while view:
            fd = self._fd
            if fd is None:
                raise LineDown(f"{self.port} is not open")
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                written = 0
            except OSError as e:
                self.close()
                raise LineDown(f"writing to {self.port} failed: {e.strerror or e}") from None
            self.bytes_written += written
            view = view[written:]
            if view:
                left = deadline - loop.time()
                if left <= 0:
                    raise LineDown(f"{self.port}: output stays full (handshake, or no device)")
                await self._writable(fd, loop, left)

    async def _writable(self, fd: int, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_writer(fd, wake)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready, timeout_s)
        finally:
            if self._fd == fd:
                loop.remove_writer(fd)

    def _readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.close()
            if self._on_down is not None:
                self._on_down(f"reading {self.port} failed: {e.strerror or e}")
            return
        if data:
            self.bytes_read += len(data)
            self._on_data(data)
