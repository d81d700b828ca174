"""The issue's dead lot: no RS-485 port and every camera unreachable. `status` must say so.

The daemon runs with the example config on mock pins, its bus on a port that does not exist
and each lane's camera on a file that does not exist, with short alarm thresholds. `status`
(as `status --json` gets it over the control socket, and as the CLI prints it) lists one
alarm for the bus and one per camera, and each device's state.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from parking_sim.camera import GroundTruthReader

from gateway.app import Gateway, HardwareOverrides
from gateway.cli.service import status_sections, status_verdict
from gateway.config import CameraConfig, Settings, load_settings
from gateway.core.clock import SystemClock
from gateway.runtime.control import ControlClient
from gateway.runtime.notify import Notifier
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.slow  # the whole daemon, its cameras' reader threads


@pytest.fixture
def dead_lot(tmp_path: Path) -> Settings:
    settings = load_settings(EXAMPLE, env={
        "PARKING_GATEWAY__JOURNAL__PATH": str(tmp_path / "journal.db"),
        "PARKING_GATEWAY__CONTROL__SOCKET_PATH": str(tmp_path / "control.sock"),
        "PARKING_GATEWAY__BUS__PORT": str(tmp_path / "ttyUSB9"),
        "PARKING_GATEWAY__BUS__ALARM_AFTER_S": "0.5",
    })
    lanes = tuple(lane.model_copy(update={"camera": CameraConfig(
        url=str(tmp_path / f"{lane.id}.mp4"), unreachable_alarm_s=1)})
        for lane in settings.lanes)
    return settings.model_copy(update={"lanes": lanes})


async def _alarms(gateway: Gateway, wanted: set[str]) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while not wanted <= {a.alarm_id for a in gateway.journal.active_alarms()}:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return await ControlClient(gateway.settings.control.socket_path).call("status")


async def test_status_lists_the_dead_bus_and_cameras_with_their_alarms(
        dead_lot: Settings) -> None:
    gateway = Gateway(dead_lot, clock=SystemClock(), plates=GroundTruthReader(), sync=False,
                      notifier=Notifier(None),
                      hardware=HardwareOverrides(pin_factory=MockFactory()))
    task = asyncio.create_task(gateway.run())
    lanes = [lane.id for lane in dead_lot.lanes]
    try:
        await asyncio.wait_for(gateway.started.wait(), 20)
        report = await _alarms(gateway, {"bus.port:ttyUSB9"}
                               | {f"camera.unreachable:{lane}" for lane in lanes})
    finally:
        gateway.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)

    alarms = {a["alarmId"]: a for a in report["alarms"]}
    assert alarms["bus.port:ttyUSB9"]["severity"] == "critical"
    assert not any(a.startswith("bus.nodes_silent") for a in alarms)  # one cause, one alarm
    assert {alarms[f"camera.unreachable:{lane}"]["severity"] for lane in lanes} == {"warning"}
    bus = report["bus"]
    assert (bus["portState"], bus["nodesAnswering"]) == ("missing", 0)
    assert bus["nodes"] == len([b for b in dead_lot.bays if b.sensor.kind == "modbus"])
    cameras = {c["cameraId"]: c for c in report["cameras"]}
    assert set(cameras) == set(lanes)
    assert {c["state"] for c in cameras.values()} == {"unreachable"}
    assert {c["lastFrameAgeS"] for c in cameras.values()} == {None}

    printed = {section.title: section.rows for section in status_sections(report)}
    hardware = dict(printed["hardware"])
    assert hardware["sensor bus"].startswith(f"{bus['port']}: port missing (cannot open")
    for lane in lanes:
        assert hardware[f"camera {lane}"].startswith("unreachable (open: cannot open")
        assert hardware[f"camera {lane}"].endswith("no frame yet")
    # The alarms lead, in a section of their own.
    assert next(iter(printed)) == f"{len(alarms)} active alarm{'s' if len(alarms) > 1 else ''}"
    assert status_verdict(report).level == "failing"  # a dead bus is critical
