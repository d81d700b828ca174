"""systemd's notify protocol (sd_notify), without libsystemd: one datagram per message.

Under a `Type=notify` unit systemd sets `$NOTIFY_SOCKET`; the daemon tells it READY=1 once
the lanes run, STATUS=... lines a technician sees in `systemctl status`, WATCHDOG=1 pings
within `WatchdogSec`, and STOPPING=1 on shutdown. Outside systemd (a terminal, tests, the
demo) there is no socket and every call does nothing.

The watchdog is only worth having if a ping means "the lot is really being run": the pinger
asks an `is_alive` check (every lane loop ticked recently) before each ping and withholds it
otherwise, so that systemd restarts a daemon whose event loop runs but whose lanes hang.
A failed send is logged and counted, never raised: losing a notification must not stop a lane.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger(__name__)

# systemd reads at most this much of one datagram's text (its NOTIFY_BUFFER_MAX is 4 KiB
# plus credentials); STATUS lines are for a person and are cut well before that.
MAX_STATUS_CHARS = 500


class Notifier:
    """Sends sd_notify messages to `address`, or nothing when there is none.

    `watchdog_usec` is systemd's `$WATCHDOG_USEC`: the unit's WatchdogSec, in microseconds.
    Build one from the environment with `Notifier.from_env()`.
    """

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.sent = 0
        self.send_errors = 0
        self._socket: socket.socket | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd's variables describe; a disabled one when they are absent.

        `$WATCHDOG_PID`, when set, names the process the watchdog is for: a child process
        that inherited the variables must not ping on the daemon's behalf.
        """
        environ = os.environ if env is None else env
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog = _positive_int(environ.get("WATCHDOG_USEC"))
        pid = _positive_int(environ.get("WATCHDOG_PID"))
        if pid is not None and pid != os.getpid():
            watchdog = None
        return cls(address, watchdog_usec=watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half the timeout, as sd_watchdog_enabled(3) advises."""
        if not self.enabled or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2_000_000

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` lines as one datagram; False if it was not sent (or not wanted)."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            self._connected().sendall(message)
        except OSError as e:
            self.send_errors += 1
            log.warning("notify.send_failed", address=self.address, error=str(e),
                        message=message.decode(errors="replace")[:80])
            self.close()  # a restarted systemd has a new socket: reconnect next time
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        """The daemon has started: systemd lets `systemctl start` return."""
        return self.notify("READY=1", *([] if status is None else [_status(status)]))

    def status(self, text: str) -> bool:
        """A one-line state for `systemctl status` (lanes, lot state, sync)."""
        return self.notify(_status(text))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun: systemd waits for the exit (TimeoutStopSec) without a restart."""
        return self.notify("STOPPING=1", *([] if status is None else [_status(status)]))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time before start-up or shutdown counts as failed (a long check)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    async def run_watchdog(self, is_alive: Callable[[], bool]) -> None:
        """Ping WATCHDOG=1 every half timeout while `is_alive()` holds; runs until cancelled.

        When the check fails the ping is withheld, so systemd kills and restarts the daemon
        after WatchdogSec; a check that raises counts as failed. Returns at once when systemd
        runs no watchdog for this process.
        """
        interval = self.watchdog_interval
        if interval is None:
            return
        log.info("notify.watchdog_started", interval_s=interval)
        alive = True
        while True:
            now_alive = _check(is_alive)
            if now_alive:
                self.watchdog()
            if now_alive != alive:
                if now_alive:
                    log.warning("notify.watchdog_resumed")
                else:
                    log.error("notify.watchdog_withheld",
                              reason="a lane loop has not ticked recently; systemd restarts"
                              " the daemon if this lasts for WatchdogSec")
                alive = now_alive
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _connected(self) -> socket.socket:
        if self._socket is None:
            assert self.address is not None
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)  # never wait on systemd from the event loop
                sock.connect(_socket_address(self.address))
            except OSError:
                sock.close()
                raise
            self._socket = sock
        return self._socket


def _socket_address(address: str) -> str | bytes:
    """`@name` is a socket in Linux's abstract namespace: a leading NUL byte, no file."""
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    return address


def _status(text: str) -> str:
    # One datagram line per key: a newline inside the text would start a bogus assignment.
    line = " ".join(text.split())
    return "STATUS=" + line[:MAX_STATUS_CHARS]


def _check(is_alive: Callable[[], bool]) -> bool:
    try:
        return bool(is_alive())
    except Exception:
        log.exception("notify.liveness_check_failed")
        return False


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(value) if value else None
    except ValueError:
        return None
    return number if number is not None and number > 0 else None
