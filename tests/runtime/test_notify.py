"""sd_notify against a real AF_UNIX datagram socket, as systemd listens on one."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.runtime.notify import MAX_STATUS_CHARS, Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """systemd's side: a bound datagram socket and the address a unit would get."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.setblocking(False)
    yield sock, str(path)
    sock.close()


def _received(sock: socket.socket) -> list[str]:
    out: list[str] = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def _next(sock: socket.socket) -> str:
    """The next datagram, awaited on the event loop (no sleeping)."""
    return (await asyncio.get_running_loop().sock_recv(sock, 4096)).decode()


def test_lifecycle_messages_arrive_as_systemd_reads_them(listener):
    sock, address = listener
    notifier = Notifier(address)
    try:
        assert notifier.ready("3 lanes running")
        assert notifier.status("lot open\n12 free")
        assert notifier.watchdog()
        assert notifier.stopping("finishing barrier movements")
    finally:
        notifier.close()
    assert _received(sock) == [
        "READY=1\nSTATUS=3 lanes running",
        "STATUS=lot open 12 free",  # a newline would start a bogus assignment
        "WATCHDOG=1",
        "STOPPING=1\nSTATUS=finishing barrier movements",
    ]
    assert notifier.sent == 4
    assert notifier.send_errors == 0


def test_status_is_cut_to_a_line_systemd_shows():
    sent: list[str] = []

    class Recording(Notifier):
        def notify(self, *assignments: str) -> bool:
            sent.extend(assignments)
            return True

    Recording("/unused").status("x" * 5000)
    assert sent == ["STATUS=" + "x" * MAX_STATUS_CHARS]


def test_abstract_namespace_address():
    name = f"parking-gateway-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.setblocking(False)
    notifier = Notifier("@" + name)
    try:
        assert notifier.ready()
        assert _received(sock) == ["READY=1"]
    finally:
        notifier.close()
        sock.close()


def test_outside_systemd_nothing_is_sent():
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert notifier.ready("x") is False
    assert notifier.stopping() is False
    assert notifier.sent == 0


async def test_watchdog_returns_at_once_without_a_watchdog(listener):
    _, address = listener
    notifier = Notifier(address)  # notify socket, but no WatchdogSec
    await asyncio.wait_for(notifier.run_watchdog(lambda: True), 1)
    notifier.close()


def test_environment_is_read_as_systemd_sets_it(listener):
    _, address = listener
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier.from_env(env)
    assert notifier.enabled
    assert notifier.watchdog_interval == 10.0  # half of WatchdogSec=20s


def test_watchdog_meant_for_another_process_is_ignored(listener):
    _, address = listener
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}
    assert Notifier.from_env(env).watchdog_interval is None


@pytest.mark.parametrize("usec", ["", "0", "-5", "soon"])
def test_unusable_watchdog_usec_means_no_watchdog(listener, usec):
    _, address = listener
    assert Notifier.from_env({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": usec}
                             ).watchdog_interval is None


def test_a_vanished_socket_is_counted_not_raised(tmp_path):
    notifier = Notifier(str(tmp_path / "gone"))
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.send_errors == 2
    notifier.close()


async def test_watchdog_pings_only_while_the_lanes_are_alive(listener):
    sock, address = listener
    notifier = Notifier(address, watchdog_usec=2_000)  # a ping every millisecond
    checks = 0
    alive = False
    withheld = asyncio.Event()

    def is_alive() -> bool:
        nonlocal checks
        checks += 1
        if checks == 5:
            withheld.set()
        return alive

    pinger = asyncio.create_task(notifier.run_watchdog(is_alive))
    try:
        await asyncio.wait_for(withheld.wait(), 5)
        assert _received(sock) == []  # five checks failed: not one ping
        alive = True
        assert await asyncio.wait_for(_next(sock), 5) == "WATCHDOG=1"
        assert await asyncio.wait_for(_next(sock), 5) == "WATCHDOG=1"
        alive = False
        pings = notifier.sent
        checks, withheld = 0, asyncio.Event()
        await asyncio.wait_for(withheld.wait(), 5)
        assert notifier.sent == pings  # not one ping since the lanes stopped
    finally:
        pinger.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pinger
        notifier.close()


async def test_a_failing_liveness_check_withholds_the_ping(listener):
    sock, address = listener
    notifier = Notifier(address, watchdog_usec=2_000)
    calls = asyncio.Event()
    count = 0

    def broken() -> bool:
        nonlocal count
        count += 1
        if count == 3:
            calls.set()
        raise RuntimeError("lane table corrupted")

    pinger = asyncio.create_task(notifier.run_watchdog(broken))
    try:
        await asyncio.wait_for(calls.wait(), 5)
        assert _received(sock) == []
    finally:
        pinger.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pinger
        notifier.close()
