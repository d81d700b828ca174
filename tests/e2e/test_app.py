"""The daemon as a whole, on mock pins: start-up, systemd notify, the control socket, supervision,
and a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory
from parking_sim.camera import GroundTruthReader

from gateway.app import Gateway, HardwareOverrides
from gateway.config import Settings, load_settings
from gateway.core.clock import SystemClock
from gateway.runtime.control import ControlClient
from gateway.runtime.notify import Notifier
from tests.conftest import EXAMPLE
from tests.controllers.lanes import FakeCamera

pytestmark = pytest.mark.slow  # the whole daemon on simulated hardware


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(EXAMPLE, env={
        "PARKING_GATEWAY__JOURNAL__PATH": str(tmp_path / "journal.db"),
        "PARKING_GATEWAY__CONTROL__SOCKET_PATH": str(tmp_path / "control.sock"),
        "PARKING_GATEWAY__BUS__PORT": str(tmp_path / "no-such-port"),
    })


@pytest.fixture
def notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    yield sock
    sock.close()


@contextlib.asynccontextmanager
async def running(settings: Settings, tmp_path: Path, notifier: Notifier | None = None,
                  sync: bool = False) -> AsyncIterator[Gateway]:
    clock = SystemClock()
    factory = MockFactory()
    cameras = {lane.id: FakeCamera(lane.id, clock) for lane in settings.lanes}
    gateway = Gateway(settings, clock=clock, plates=GroundTruthReader(), sync=sync,
                      notifier=notifier or Notifier(None),
                      hardware=HardwareOverrides(pin_factory=factory, cameras=cameras))
    task = asyncio.create_task(gateway.run())
    try:
        await asyncio.wait_for(gateway.started.wait(), 20)
        gateway.factory = factory  # type: ignore[attr-defined]
        yield gateway
    finally:
        gateway.stop()
        await asyncio.wait_for(task, 30)


def received(sock: socket.socket) -> list[str]:
    out = []
    with contextlib.suppress(BlockingIOError):
        while True:
            out.append(sock.recv(4096).decode())
    return out


async def test_starts_quickly_says_ready_and_stopping_to_systemd(
        settings: Settings, tmp_path: Path, notify_socket: socket.socket) -> None:
    notifier = Notifier(str(tmp_path / "notify"))
    async with running(settings, tmp_path, notifier) as gateway:
        assert gateway.ready_after_s is not None
        assert gateway.ready_after_s < 2.0  # the target without LPR, with margin
        messages = received(notify_socket)
        assert messages[0].startswith("READY=1")
        assert gateway.alive()
    assert any(m.startswith("STOPPING=1") for m in received(notify_socket))


async def test_the_technician_socket_drives_the_lot(settings: Settings, tmp_path: Path) -> None:
    async with running(settings, tmp_path) as gateway:
        client = ControlClient(settings.control.socket_path)
        status = await client.call("status")
        assert [lane["laneId"] for lane in status["lanes"]] == [
            "entry-north", "entry-south", "exit"]
        sensed = [bay for bay in settings.bays if bay.sensor.kind != "none"]
        assert status["occupancy"]["total"]["unknown"] == len(sensed)  # no reading yet
        await client.call("lot.state", {"state": "closed"})
        assert gateway.lot_state() == "closed"
        await client.call("lane.mode", {"lane": "exit", "mode": "locked_open"})
        await client.call("bay.service", {"bay": "A-01", "in_service": False})
        await asyncio.sleep(0.1)
        assert gateway.lanes["exit"].mode == "locked_open"
        assert not gateway.occupancy.bays["A-01"].in_service
        with pytest.raises(Exception, match="no lane"):
            await client.call("gate.open", {"lane": "nowhere", "reason": "test"})


async def test_a_permit_holder_drives_in_through_real_gpio_drivers(
        settings: Settings, tmp_path: Path) -> None:
    from gateway.core.rights import Permit

    async with running(settings, tmp_path) as gateway:
        gateway.access.load("permits", [Permit(permitId="p-9", plates=("PERMIT9",))])
        lane = gateway.lanes["entry-north"]
        camera = lane.camera
        assert isinstance(camera, FakeCamera)
        camera.show("PERMIT9")
        pins = settings.lanes[0].gpio
        factory = gateway.factory  # type: ignore[attr-defined]
        factory.pin(pins.arming_loop).drive_high()
        for _ in range(100):
            if lane.state == "open":
                break
            await asyncio.sleep(0.02)
        assert lane.state == "open"
        assert lane.open_latencies_ms


async def test_a_failing_part_is_restarted_and_the_others_run_on(
        settings: Settings, tmp_path: Path) -> None:
    async with running(settings, tmp_path) as gateway:
        runs = 0
        forever = asyncio.Event()

        async def flaky() -> None:
            nonlocal runs
            runs += 1
            if runs <= 2:
                raise RuntimeError("the serial adapter was unplugged")
            await forever.wait()

        task = asyncio.create_task(gateway._supervise("flaky", flaky))
        for _ in range(100):
            if runs == 3:
                break
            await asyncio.sleep(0.05)
        part = gateway.parts["flaky"]
        assert (runs, part.restarts, part.running) == (3, 2, True)
        assert "unplugged" in (part.last_error or "")
        assert all(gateway.parts[f"lane:{lane}"].running for lane in gateway.lanes)
        # A technician sees it: the part's alarm stands while it is failing.
        [alarm] = [a for a in gateway.journal.active_alarms()
                   if a.alarm_id == "gateway.part_failed:flaky"]
        assert (alarm.severity, alarm.details["restarts"]) == ("critical", 1)
        assert "unplugged" in alarm.message
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_one_bad_event_does_not_stop_a_lane(settings: Settings, tmp_path: Path) -> None:
    async with running(settings, tmp_path) as gateway:
        lane = gateway.lanes["entry-south"]
        original = lane._handle
        calls = 0

        async def broken(kind: str, value: object) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug in one event")
            await original(kind, value)

        lane._handle = broken  # type: ignore[method-assign]
        lane.post("arming", False)
        lane.post("arming", False)
        await asyncio.sleep(0.1)
        assert calls == 2
        assert gateway.parts["lane:entry-south"].running
        assert gateway.parts["lane:entry-south"].restarts == 0


async def test_status_shows_the_sync_backlog_while_the_backend_is_unreachable(
        settings: Settings, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    offline = settings.model_copy(update={"sync": settings.sync.model_copy(update={
        "mqtt": settings.sync.mqtt.model_copy(update={"host": "127.0.0.1", "port": port,
                                                       "tls": None})})})
    async with running(offline, tmp_path, sync=True) as gateway:
        await gateway.set_lot_state("full", actor="test")
        await gateway.journal.append(_any_event(gateway))
        status = await gateway.status()
        assert status["sync"]["connected"] is False
        assert status["sync"]["backlog"] >= 1
        # Unreachable for less than lot.offline_after_s: not yet "offline" for the exit policy.
        assert gateway.online()


def _any_event(gateway: Gateway):  # type: ignore[no-untyped-def]
    from gateway.core import events

    return events.alarm_raised(at=gateway.clock.now(), alarm_id="test.alarm", code="test.alarm",
                               severity="info", message="a test", component="test")
