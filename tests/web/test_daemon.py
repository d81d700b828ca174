"""The server in the daemon: a bay change reaches a live stream and the retained MQTT state at
once, the actions are audited as the control socket's are, the histograms fill from the
daemon's own measures, a stop ends the streams; and with the server off, aiohttp is never
loaded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gpiozero.pins.mock import MockFactory
from jsonschema import Draft202012Validator
from parking_sim.backend import BackendSim
from parking_sim.camera import GroundTruthReader

from gateway.app import Gateway, HardwareOverrides
from gateway.config import Settings, load_settings
from gateway.core.availability import SCHEMA
from gateway.core.clock import SystemClock
from gateway.drivers import BayReading
from gateway.runtime.notify import Notifier
from tests.conftest import EXAMPLE
from tests.controllers.lanes import FakeCamera
from tests.sync import mosquitto
from tests.sync.mosquitto import Mosquitto
from tests.web.conftest import ACCOUNTS, bearer
from tests.web.test_api import read_event

broker = mosquitto.broker
SENSED_BAY = "B-01"  # on the bus, which has no port here: only the test's readings reach it


def settings_for(tmp_path: Path, **env: str) -> Settings:
    accounts = {name: a.model_dump(exclude_none=True) for name, a in ACCOUNTS.items()}
    return load_settings(EXAMPLE, env={
        "PARKING_GATEWAY__JOURNAL__PATH": str(tmp_path / "journal.db"),
        "PARKING_GATEWAY__CONTROL__SOCKET_PATH": str(tmp_path / "control.sock"),
        "PARKING_GATEWAY__BUS__PORT": str(tmp_path / "no-such-port"),
        "PARKING_GATEWAY__HTTP__ENABLED": "true",
        "PARKING_GATEWAY__HTTP__LISTEN": "127.0.0.1:0",
        "PARKING_GATEWAY__HTTP__ACCOUNTS": json.dumps(accounts),
        **env,
    })


@contextlib.asynccontextmanager
async def running(settings: Settings, *, sync: bool = False) -> AsyncIterator[Gateway]:
    clock = SystemClock()
    gateway = Gateway(settings, clock=clock, plates=GroundTruthReader(), sync=sync,
                      notifier=Notifier(None), hardware=HardwareOverrides(
                          pin_factory=MockFactory(),
                          cameras={lane.id: FakeCamera(lane.id, clock)
                                   for lane in settings.lanes}))
    task = asyncio.create_task(gateway.run())
    try:
        await asyncio.wait_for(gateway.started.wait(), 20)
        assert gateway.web is not None
        await asyncio.wait_for(gateway.web.listening.wait(), 10)
        yield gateway
    finally:
        gateway.stop()
        await asyncio.wait_for(task, 30)


def park(gateway: Gateway, state: str = "occupied") -> float:
    """A car on the sensed bay, as its driver reports it; when."""
    gateway.occupancy.on_reading(BayReading(SENSED_BAY, state,  # type: ignore[arg-type]
                                            "modbus:11", gateway.clock.stamp()))
    return time.monotonic()


@pytest.mark.slow
async def test_a_bay_change_reaches_the_stream_and_actions_are_audited(
        tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    async with aiohttp.ClientSession(headers=bearer("tech")) as client:
        async with running(settings) as gateway:
            assert gateway.web is not None
            base = f"http://127.0.0.1:{gateway.web.port}"
            async with client.get(f"{base}/readyz") as response:
                assert (response.status, (await response.json())["ready"]) == (200, True)
            stream = await client.get(f"{base}/api/v1/availability/stream")
            before = await read_event(stream)
            changed = park(gateway)
            after = await read_event(stream)
            seen = time.monotonic()
            assert after["lot"]["unknown"] == before["lot"]["unknown"] - 1
            assert after["lot"]["occupied"] == before["lot"]["occupied"] + 1
            assert seen - changed < 0.5  # on change, not on a tick
            async with client.post(f"{base}/api/v1/lot/state",
                                   json={"state": "closed"}) as response:
                assert response.status == 200
            assert (await read_event(stream))["lotState"] == "closed"
            async with client.get(f"{base}/metrics") as response:
                metrics = await response.text()
            stopping = time.monotonic()  # with the stream open
        assert time.monotonic() - stopping < 5  # the stop ended the stream
        with contextlib.suppress(aiohttp.ClientPayloadError):
            assert await asyncio.wait_for(stream.content.read(), 1) == b""
        stream.close()
    assert "parking_bay_commit_latency_seconds_count 1.0" in metrics
    assert 'parking_lane_decisions_total{lane="exit",outcome="passed"} 0.0' in metrics
    assert gateway.lot_state() == "closed"
    with sqlite3.connect(settings.journal.path) as db:
        audit = db.execute("SELECT actor, action FROM audit").fetchall()
    assert ("http:tech", "lot.state") in audit


@pytest.mark.slow
async def test_the_retained_occupancy_state_is_the_availability_document_on_change(
        tmp_path: Path, broker: Mosquitto) -> None:
    mqtt = json.dumps({"host": "127.0.0.1", "port": broker.port, "tls": None,
                       "username": None})
    settings = settings_for(tmp_path, PARKING_GATEWAY__SYNC__MQTT=mqtt,
                            PARKING_GATEWAY__HTTP__ENABLED="false")
    topic = f"{settings.gateway.lot_id}/{settings.gateway.gateway_id}/occupancy"
    validator = Draft202012Validator(SCHEMA)

    def retained() -> dict[str, Any] | None:
        return backend.state.get(topic)

    async with BackendSim(mqtt_port=broker.port) as backend:
        await backend.ready.wait()
        gateway = Gateway(settings, plates=GroundTruthReader(), notifier=Notifier(None),
                          hardware=HardwareOverrides(pin_factory=MockFactory(), cameras={
                              lane.id: FakeCamera(lane.id, SystemClock())
                              for lane in settings.lanes}))
        task = asyncio.create_task(gateway.run())
        try:
            async with asyncio.timeout(20):
                while retained() is None:  # noqa: ASYNC110 (the backend's dict)
                    await asyncio.sleep(0.01)
            first = retained()
            validator.validate(first)
            assert gateway.web is None  # the server off, the document still goes out
            changed = park(gateway)
            async with asyncio.timeout(5):
                while retained() == first:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
            arrived = time.monotonic()
            second = retained()
        finally:
            gateway.stop()
            await asyncio.wait_for(task, 30)
    assert first is not None
    assert second is not None
    validator.validate(second)
    assert second["lot"]["occupied"] == first["lot"]["occupied"] + 1
    assert second["recordDateTime"] > first["recordDateTime"]
    assert arrived - changed < 0.5  # on change: the maintenance tick is a second


@pytest.mark.slow
async def test_a_port_in_use_is_an_alarm_and_the_lot_runs_on(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = settings_for(tmp_path, PARKING_GATEWAY__HTTP__LISTEN=f"127.0.0.1:{port}")
        gateway = Gateway(settings, plates=GroundTruthReader(), sync=False,
                          notifier=Notifier(None), hardware=HardwareOverrides(
                              pin_factory=MockFactory(), cameras={
                                  lane.id: FakeCamera(lane.id, SystemClock())
                                  for lane in settings.lanes}))
        task = asyncio.create_task(gateway.run())
        try:
            await asyncio.wait_for(gateway.started.wait(), 20)
            async with asyncio.timeout(20):
                while not any(a.alarm_id == "gateway.part_failed:http"  # noqa: ASYNC110
                              for a in gateway.journal.active_alarms()):
                    await asyncio.sleep(0.05)
            assert gateway.readiness() == {"started": True, "journal": True, "lanes": True}
            assert "address already in use" in (gateway.parts["http"].last_error or "").lower()
        finally:
            gateway.stop()
            await asyncio.wait_for(task, 30)


def test_with_the_server_off_the_daemon_loads_no_aiohttp() -> None:
    """The daemon's modules, imported as `parking-gateway run` imports them."""
    probe = ("import sys, gateway.cli.main, gateway.cli.daemon, gateway.app\n"
             "print(sorted(m for m in ('aiohttp', 'prometheus_client') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
