"""What a technician set, and the alarms they must see, are still there after a restart."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.journal import Alarm
from gateway.runtime.control import ControlClient, RemoteError
from tests.e2e.test_app import running, settings  # noqa: F401 (the fixture)

pytestmark = pytest.mark.slow  # the whole daemon on simulated hardware


async def test_the_technicians_settings_survive_a_restart(settings: Settings,  # noqa: F811
                                                          tmp_path: Path) -> None:
    async with running(settings, tmp_path) as gateway:
        client = ControlClient(settings.control.socket_path)
        await client.call("lot.state", {"state": "closed"})
        await client.call("lane.mode", {"lane": "entry-south", "mode": "locked_closed"})
        await client.call("bay.service", {"bay": "A-01", "in_service": False})
        await asyncio.sleep(0.1)
    async with running(settings, tmp_path) as gateway:
        status = await ControlClient(settings.control.socket_path).call("status")
        assert gateway.lot_state() == "closed"
        assert status["operatorState"] == "closed"
        assert {lane["laneId"]: lane["mode"] for lane in status["lanes"]} == {
            "entry-north": "auto", "entry-south": "locked_closed", "exit": "auto"}
        assert not gateway.occupancy.bays["A-01"].in_service
        assert status["settings"] == {
            "lotState": "closed",
            "laneModes": {"entry-north": "auto", "entry-south": "locked_closed", "exit": "auto"},
            "baysOutOfService": ["A-01"]}
        client = ControlClient(settings.control.socket_path)
        await client.call("lot.state", {"state": "open"})
        await client.call("lane.mode", {"lane": "entry-south", "mode": "auto"})
        await client.call("bay.service", {"bay": "A-01", "in_service": True})
        await asyncio.sleep(0.1)
    async with running(settings, tmp_path) as gateway:
        assert gateway.settings_view() == {
            "lotState": "open",
            "laneModes": {"entry-north": "auto", "entry-south": "auto", "exit": "auto"},
            "baysOutOfService": []}


async def test_a_setting_the_config_no_longer_allows_is_ignored(settings: Settings,  # noqa: F811
                                                                tmp_path: Path) -> None:
    async with running(settings, tmp_path):
        pass
    con = sqlite3.connect(settings.journal.path)
    with con:
        con.executemany("INSERT INTO settings VALUES (?, ?, '2026-01-01T00:00:00Z', 'cli:x')", [
            ("lot.state", '"sideways"'), ("lane.mode:exit", '"flying"'),
            ("lane.mode:gone", '"locked_open"'), ("bay.service:Z-99", "false"),
            ("bay.service:A-01", "not json")])
    con.close()
    async with running(settings, tmp_path) as gateway:
        assert gateway.settings_view() == {
            "lotState": "open",
            "laneModes": {"entry-north": "auto", "entry-south": "auto", "exit": "auto"},
            "baysOutOfService": []}


async def test_alarms_stay_raised_across_a_restart_until_acknowledged(
        settings: Settings, tmp_path: Path) -> None:  # noqa: F811
    async with running(settings, tmp_path) as gateway:
        await gateway.journal.raise_alarm(Alarm(
            "lane.out_of_order:exit", "critical", "the barrier does not answer",
            component="lane"))
        await gateway.journal.raise_alarm(Alarm(
            "camera.stale:entry-north", "warning", "no new frame", component="camera"))
    async with running(settings, tmp_path):
        client = ControlClient(settings.control.socket_path)
        listed = await client.call("alarms.list")
        ids = {a["alarmId"] for a in listed}
        assert {"lane.out_of_order:exit", "camera.stale:entry-north"} <= ids
        assert all(a["raisedAt"] for a in listed)
        status = await client.call("status")
        assert ids == {a["alarmId"] for a in status["alarms"]}
        # The lane back in order: a technician's mode clears its out-of-order alarm.
        await client.call("lane.mode", {"lane": "exit", "mode": "auto"})
        await client.call("alarms.ack", {"alarm_id": "camera.stale:entry-north"})
        with pytest.raises(RemoteError, match="no active alarm"):
            await client.call("alarms.ack", {"alarm_id": "camera.stale:entry-north"})
        ids = {a["alarmId"] for a in await client.call("alarms.list")}
        assert not ids & {"lane.out_of_order:exit", "camera.stale:entry-north"}
    async with running(settings, tmp_path) as gateway:
        ids = {a.alarm_id for a in gateway.journal.active_alarms()}
        assert not ids & {"lane.out_of_order:exit", "camera.stale:entry-north"}
    con = sqlite3.connect(settings.journal.path)
    audit = con.execute("SELECT action, subject FROM audit WHERE action = 'alarm.ack'").fetchall()
    con.close()
    assert audit == [("alarm.ack", "camera.stale:entry-north")]
