"""`sensors watch`: it opens with every sensor, what is wrong first, then streams the changes,
bay service changes too (issue 20, item 1)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pytest
import structlog
from click.testing import CliRunner
from rich.console import Console

from gateway.cli import sensors as sensors_cli
from gateway.cli.main import cli
from gateway.config import Settings, load_settings
from gateway.drivers import BayReading
from gateway.runtime.control import ControlClient
from tests.conftest import EXAMPLE


def bay(bay_id: str, state: str = "free", *, since: str = "2026-03-02T08:00:00.000000Z",
        **fields: Any) -> dict[str, Any]:
    return {"bayId": bay_id, "state": state, "healthy": state != "unknown", "inService": True,
            "source": "magnetic", "since": since, "fault": None, "unitId": 1, "silentS": None,
            **fields}


SNAPSHOT = {"kind": "snapshot", "at": "2026-03-02T09:00:00.000000Z", "bays": [
    bay("A-01"),
    bay("A-02", "occupied", since="2026-03-02T08:50:00.000000Z"),
    bay("A-03", inService=False),
    bay("A-04", "unknown", unitId=None, source="ultrasonic"),
    bay("A-05", silentS=12.0),
    bay("A-06", "unknown", healthy=False, fault="node not answering (timeout)", silentS=40.0),
]}
PROBLEMS_FIRST = ["A-06", "A-05", "A-04", "A-03", "A-02", "A-01"]


class FakeClient:
    """The daemon's side of the watch: these events, then the end of the stream."""

    events: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, _path: Path) -> None:
        pass

    async def stream(self, _method: str) -> AsyncIterator[dict[str, Any]]:
        for event in self.events:
            yield event


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [SNAPSHOT]
    monkeypatch.setattr(FakeClient, "events", events)
    monkeypatch.setattr(sensors_cli, "ControlClient", FakeClient)
    yield events
    structlog.reset_defaults()


@pytest.mark.usefixtures("watched")
def test_the_watch_lists_every_sensor_what_is_wrong_first() -> None:
    result = CliRunner().invoke(cli, ["sensors", "watch", "--utc"])

    lines = result.stdout.splitlines()
    assert lines[0] == ("bay sensors at 2026-03-02 09:00:00+00:00: 6 bays with sensors:"
                        " 1 faulty, 1 silent, 1 unknown, 1 out of service; 2 fine")
    assert [line.split()[0] for line in lines[2:8]] == PROBLEMS_FIRST
    assert "node not answering (timeout)" in lines[2]
    assert "silent for 12 s" in lines[3]
    assert result.exit_code == 1  # the stream ended: the daemon is stopping
    assert "the daemon ended the watch" in result.stderr


def test_changes_follow_the_opening_state_service_changes_too(
        watched: list[dict[str, Any]]) -> None:
    watched += [
        {"kind": "reading", "bayId": "A-01", "state": "occupied", "previous": "free",
         "healthy": True, "fault": None, "raw": 541.0, "source": "modbus:1",
         "at": "2026-03-02T09:00:05.000000Z"},
        {"kind": "service", "bayId": "A-03", "inService": True, "actor": "cli:ana",
         "at": "2026-03-02T09:00:07.000000Z"},
    ]

    result = CliRunner().invoke(cli, ["sensors", "watch", "--utc"])

    changes = result.stdout.split("\nchanges:\n")[1].splitlines()
    assert changes == [
        "2026-03-02 09:00:05+00:00  A-01  free -> occupied  healthy  raw=541.0",
        "2026-03-02 09:00:07+00:00  A-03  in service (by cli:ana)",
    ]


def test_the_live_view_keeps_the_problems_in_sight_on_a_small_terminal() -> None:
    board = sensors_cli.Board()
    board.apply(SNAPSHOT)
    console = Console(width=80, record=True, file=io.StringIO())

    console.print(sensors_cli.live_view(board, ZoneInfo("Europe/Berlin"), 80, 10))

    lines = console.export_text().splitlines()
    assert len(lines) == 10
    assert all(len(line) <= 80 for line in lines)
    rows = [line.split() for line in lines if line.startswith(" A-")]
    assert [row[0] for row in rows] == PROBLEMS_FIRST[:4]  # one line each: room for four
    assert rows[0][-1] == "09:00:00+01:00"  # lot time with its offset, on the day: no date
    assert lines[-1] == "2 more bays below, fine; times in Europe/Berlin; Ctrl-C to stop"


def test_a_recovered_node_leaves_the_problems() -> None:
    board = sensors_cli.Board()
    board.apply(SNAPSHOT)

    board.apply({"kind": "reading", "bayId": "A-06", "state": "free", "previous": "unknown",
                 "healthy": True, "fault": None, "at": "2026-03-02T09:01:00.000000Z"})

    assert [s.bay_id for s in board.ordered()][:3] == ["A-05", "A-04", "A-03"]
    assert board.sensors["A-06"].problem is None


# --- against the daemon --------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(EXAMPLE, env={
        "PARKING_GATEWAY__JOURNAL__PATH": str(tmp_path / "journal.db"),
        "PARKING_GATEWAY__CONTROL__SOCKET_PATH": str(tmp_path / "control.sock"),
        "PARKING_GATEWAY__BUS__PORT": str(tmp_path / "no-such-port"),
    })


@pytest.mark.slow  # the daemon on mock pins
async def test_the_daemons_watch_opens_with_every_sensor_then_streams_changes(
        settings: Settings, tmp_path: Path) -> None:
    from tests.e2e.test_app import running

    async with running(settings, tmp_path) as gateway:
        client = ControlClient(settings.control.socket_path)
        await client.call("bay.service", {"bay": "A-02", "in_service": False})
        stream = client.stream("sensors.watch")
        try:
            snapshot = await asyncio.wait_for(anext(stream), 5)
            assert snapshot["kind"] == "snapshot"
            sensed = [b.id for b in settings.bays if b.sensor.kind != "none"]
            rows = {row["bayId"]: row for row in snapshot["bays"]}
            assert sorted(rows) == sorted(sensed)
            assert rows["A-02"]["inService"] is False
            assert rows["A-03"]["unitId"] == 1  # a node on the bus says which it is
            assert "unitId" not in rows["A-01"]  # an ultrasonic sensor on GPIO

            gateway.occupancy.on_reading(BayReading(
                "A-01", "occupied", "ultrasonic:23", gateway.clock.stamp(), None, 42.0))
            reading = await asyncio.wait_for(anext(stream), 5)
            assert (reading["kind"], reading["bayId"], reading["state"], reading["raw"]) == (
                "reading", "A-01", "occupied", 42.0)

            await client.call("bay.service", {"bay": "A-02", "in_service": True})
            service = await asyncio.wait_for(anext(stream), 5)
            assert (service["kind"], service["bayId"], service["inService"]) == (
                "service", "A-02", True)
            assert service["actor"].startswith("cli:")
            assert service["at"].endswith("Z")
        finally:
            await stream.aclose()
