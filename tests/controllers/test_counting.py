"""Levels counted at their ramps: loop edges through real gpiozero (mock pins) into counts
journaled in a real SQLite journal, kept across a restart; drift, recount and the quiet-hour
correction; the counted level in the lot's availability."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from gpiozero.pins.mock import MockFactory
from parking_sim.gpio import SimPins

from gateway.config import JournalConfig, LevelConfig
from gateway.controllers.counting import ACTOR_CORRECTION, Counting
from gateway.core.availability import Availability, Place, Where, tally
from gateway.core.clock import FakeClock
from gateway.drivers.gpio import VehicleLoop
from gateway.journal import Journal
from tests.core.schemas import validate_cloudevent

BERLIN = ZoneInfo("Europe/Berlin")
SOURCE = "urn:parking:lot:gw"


def level(level_id: str = "2", capacity: int = 3, *, ramp_from: str = "outside",
          correct_at: str | None = None, ramp_id: str | None = None,
          pins: tuple[int, int] = (14, 15)) -> LevelConfig:
    return LevelConfig.model_validate({
        "id": level_id, "capacity": capacity, "correct_at": correct_at,
        "ramps": [{"id": ramp_id or f"r-{level_id}", "loop_a": pins[0], "loop_b": pins[1],
                   "from": ramp_from, "glitch_ms": 20, "settle_ms": 60}]})


@pytest.fixture
async def journal(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Journal]:
    j = await Journal.open(JournalConfig(path=tmp_path / "journal.db",
                                         maintenance_interval_s=3600), clock=clock)
    yield j
    await j.close()


async def events_of(journal: Journal) -> list[dict[str, Any]]:
    records = await journal.read_outbox(0, 10_000)
    return [json.loads(r.to_json(SOURCE)) for r in records]


async def counted(journal: Journal) -> list[dict[str, Any]]:
    return [e["data"] for e in await events_of(journal)
            if e["type"] == "org.parking.v1.level.counted"]


async def drain(counting: Counting) -> None:
    """Journal what the loops queued (what `run` does)."""
    while not counting._crossings.empty():
        ramp_id, crossing = counting._crossings.get_nowait()
        await counting.apply(ramp_id, crossing)


async def cross(pins: SimPins, a: int, b: int, *, forward: bool = True,
                back_out: bool = False) -> None:
    """A car over the ramp's loops at a brisk pace; `back_out`: it reaches the far loop and
    reverses out the way it came."""
    first, second = (a, b) if forward else (b, a)
    steps = [(first, True), (second, True)]
    steps += [(second, False), (first, False)] if back_out else [(first, False), (second, False)]
    for pin, level_ in steps:
        pins.input(pin).set_level(level_)
        await asyncio.sleep(0.03)
    await asyncio.sleep(0.12)  # past the settle time


async def test_crossings_count_in_and_out_and_survive_a_restart(
        tmp_path: Path, clock: FakeClock) -> None:
    pins = SimPins(MockFactory())
    for pin in (14, 15):
        pins.input(pin)  # the simulator's pins, before gpiozero asks for them
    config = level(capacity=10)
    for _ in range(2):  # the same journal, before and after a restart
        journal = await Journal.open(JournalConfig(path=tmp_path / "j.db"), clock=clock)
        counting = Counting([config], journal, clock, tz=BERLIN)
        await counting.restore(await journal.lot_settings())
        a, b = (VehicleLoop(f"l{p}", p, debounce_ms=0, factory=pins.factory) for p in (14, 15))
        counting.attach("r-2", a, b)
        try:
            before = counting.counts()["2"]
            await cross(pins, 14, 15)
            await cross(pins, 14, 15)
            await cross(pins, 14, 15, forward=False)
            await cross(pins, 14, 15, back_out=True)  # reached B, reversed: nothing
            await drain(counting)
            assert counting.counts()["2"] == before + 1
        finally:
            counting.close()
            a.close()
            b.close()
            events = await events_of(journal)
            await journal.close()
        assert before == (0 if _ == 0 else 1)  # restored from the journal
    for event in events:
        validate_cloudevent(event)
    data = [e["data"] for e in events if e["type"] == "org.parking.v1.level.counted"]
    assert [(d["previousCount"], d["count"], d["cause"], d["rampId"]) for d in data][-3:] == [
        (1, 2, "ramp", "r-2"), (2, 3, "ramp", "r-2"), (3, 2, "ramp", "r-2")]
    assert counting.summary()["levels"][0]["ramps"][0]["backouts"] == 1


async def test_a_crossing_between_two_counted_levels_moves_one_vehicle(
        journal: Journal, clock: FakeClock) -> None:
    lower = level("1", 5, ramp_id="r-0-1", pins=(2, 3))
    upper = level("2", 5, ramp_from="1", ramp_id="r-1-2")
    counting = Counting([lower, upper], journal, clock, tz=BERLIN)
    await counting.apply("r-0-1", "in")
    await counting.apply("r-1-2", "in")
    assert counting.counts() == {"1": 0, "2": 1}
    await counting.apply("r-1-2", "out")
    assert counting.counts() == {"1": 1, "2": 0}
    moves = await counted(journal)
    assert [(d["levelId"], d["count"]) for d in moves] == [
        ("1", 1), ("1", 0), ("2", 1), ("2", 0), ("1", 1)]


async def test_a_count_leaving_its_bounds_is_clamped_and_alarmed_until_recounted(
        journal: Journal, clock: FakeClock) -> None:
    changes: list[None] = []
    counting = Counting([level(capacity=2)], journal, clock, tz=BERLIN,
                        on_change=lambda: changes.append(None))
    await counting.apply("r-2", "out")  # a car going out that was never counted in
    assert counting.counts()["2"] == 0
    assert [a.alarm_id for a in journal.active_alarms()] == ["count.drift:2"]
    assert (await counted(journal))[-1]["clamped"] is True
    for _ in range(3):
        await counting.apply("r-2", "in")
    assert counting.counts()["2"] == 2  # capacity

    previous = await counting.set_count("2", 1, actor="cli:tech")
    assert previous == 2
    assert journal.active_alarms() == []
    assert (await journal.lot_settings())["count:2"] == 1
    last = (await counted(journal))[-1]
    assert (last["cause"], last["count"], last["previousCount"]) == ("recount", 1, 2)
    audit = await _audit(journal)
    assert audit[-1][:3] == ("cli:tech", "count.set", "2")
    assert json.loads(audit[-1][3]) == {"count": 1, "previous": 2, "error": 1}
    assert changes  # the availability is told
    with pytest.raises(ValueError, match="0 to 2"):
        await counting.set_count("2", 3, actor="cli:tech")
    with pytest.raises(KeyError):
        await counting.set_count("9", 1, actor="cli:tech")


async def _audit(journal: Journal) -> list[tuple[Any, ...]]:
    import sqlite3

    with sqlite3.connect(journal.path) as db:
        return db.execute("SELECT actor, action, subject, details FROM audit ORDER BY rowid"
                          ).fetchall()


async def test_the_quiet_hour_sets_the_count_from_the_bay_sensors(
        journal: Journal, clock: FakeClock) -> None:
    sensed: dict[str, int | None] = {"2": 4}
    clock = FakeClock(datetime(2026, 3, 3, 2, 20, tzinfo=UTC))  # 03:20 in Berlin
    counting = Counting([level(capacity=10, correct_at="03:30")], journal, clock, tz=BERLIN,
                        sensed=sensed.get)
    for _ in range(7):
        await counting.apply("r-2", "in")
    assert await counting.check_corrections() == []  # the first look only notes the time
    clock.advance(5 * 60)
    assert await counting.check_corrections() == []  # 03:25: not yet
    clock.advance(6 * 60)
    assert await counting.check_corrections() == ["2"]  # 03:31
    assert counting.counts()["2"] == 4
    actor, action, subject, details = (await _audit(journal))[-1]
    assert (actor, action, subject) == (ACTOR_CORRECTION, "count.set", "2")
    assert json.loads(details)["error"] == 3
    clock.advance(30 * 60)
    assert await counting.check_corrections() == []  # once a day

    sensed["2"] = None  # a bay sensor reads unknown: no correction from it
    clock.advance(24 * 3600)
    assert await counting.check_corrections() == []


def test_a_ramp_counted_level_shows_in_the_availability_by_its_count() -> None:
    places = [Place("0", "A", "regular", "occupied"), Place("0", "A", "regular", "free"),
              Place("1", "B", "regular", None), Place("1", "B", "regular", None)]
    cells = tally(places, inside=2, levels={("2", "roof", "regular"): (60, 45)})
    doc = Availability("lot", "gw", datetime(2026, 3, 2, tzinfo=UTC), "open", cells).document()
    roof = doc["floors"]["2"]
    assert (roof["total"], roof["free"], roof["occupied"]) == (60, 15, 45)
    assert roof["occupancyMethod"] == "counting"
    assert doc["floors"]["1"]["occupied"] == 1  # the lanes' count fills the bays with no sensor
    assert doc["lot"]["occupancyMethod"] == "derived"
    assert doc["lot"]["free"] == 1 + 1 + 15
    only = Availability("lot", "gw", datetime(2026, 3, 2, tzinfo=UTC), "open", cells).document(
        Where(floor="2"))
    assert only["occupancyMethod"] == "counting"
    over = tally([], inside=0, levels={("2", "2", "regular"): (5, 9)})
    assert over[("2", "2", "regular")].free == 0


@pytest.mark.slow  # the whole daemon on mock pins
async def test_the_daemon_counts_its_ramp_and_takes_a_recount(tmp_path: Path) -> None:
    from gateway.config import load_settings
    from gateway.runtime.control import ControlClient, RemoteError
    from tests.conftest import EXAMPLE
    from tests.e2e.test_app import running

    settings = load_settings(EXAMPLE, env={
        "PARKING_GATEWAY__JOURNAL__PATH": str(tmp_path / "journal.db"),
        "PARKING_GATEWAY__CONTROL__SOCKET_PATH": str(tmp_path / "control.sock"),
        "PARKING_GATEWAY__BUS__PORT": str(tmp_path / "no-such-port")})
    (roof,) = settings.levels
    ramp = roof.ramps[0]
    async with running(settings, tmp_path) as gateway:
        factory = gateway.factory  # type: ignore[attr-defined]
        for pin, high in ((ramp.loop_a, True), (ramp.loop_b, True), (ramp.loop_a, False),
                          (ramp.loop_b, False)):
            (factory.pin(pin).drive_high if high else factory.pin(pin).drive_low)()
            await asyncio.sleep(0.3)
        for _ in range(50):  # settle time, then the journal
            if gateway.counting is not None and gateway.counting.counts()[roof.id] == 1:
                break
            await asyncio.sleep(0.1)
        assert gateway.counting is not None
        assert gateway.counting.counts()[roof.id] == 1
        doc = gateway.availability_now().document()
        assert doc["floors"][roof.id]["occupancyMethod"] == "counting"
        assert doc["floors"][roof.id]["occupied"] == 1
        client = ControlClient(settings.control.socket_path)
        assert (await client.call("status"))["levels"][0]["count"] == 1
        answer = await client.call("count.set", {"level": roof.id, "count": 12})
        assert (answer["previous"], answer["count"]) == (1, 12)
        shown = await client.call("count.show")
        assert shown["levels"][0]["count"] == 12
        assert shown["levels"][0]["ramps"][0]["in"] == 1
        with pytest.raises(RemoteError, match="no level"):
            await client.call("count.set", {"level": "9", "count": 1})
        with pytest.raises(RemoteError, match="0 to 60"):
            await client.call("count.set", {"level": roof.id, "count": 61})
        assert gateway.availability_now().document()["floors"][roof.id]["free"] == 48
