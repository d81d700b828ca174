"""A lane through a journal that takes no writes at all (its reserve spent), and back.

The journal's disk is made full at its one door for the lanes, `Journal.commit`, which raises
what a full disk raises (JournalFullError) while `FullDisk.full` is set; everything else about
the journal is real. The journal's own reserve is tested on a real full disk in
tests/journal/test_reserve.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.config import JournalConfig, Settings, load_settings
from gateway.core.clock import FakeClock
from gateway.journal import Journal, JournalFullError
from tests.conftest import EXAMPLE
from tests.controllers.lanes import Rig, settle
from tests.controllers.test_lane import PERMIT, make_rig

CARS = ["VIS0001", PERMIT, "VIS0002", "VIS0003"]


class FullDisk:
    """While `full`, every commit fails as on a disk with no byte left."""

    def __init__(self, journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        self.refused = 0
        commit = journal.commit

        async def commit_or_full(changes: Sequence[Any] = (), events: Sequence[Any] = ()
                                 ) -> list[int]:
            if self.full:
                self.refused += 1
                raise JournalFullError("journal write failed: database or disk is full")
            return await commit(changes, events)

        monkeypatch.setattr(journal, "commit", commit_or_full)


@pytest.fixture
def settings() -> Settings:
    return load_settings(EXAMPLE, env={})


async def open_journal(tmp_path: Path, clock: FakeClock, **kw: Any) -> Journal:
    return await Journal.open(JournalConfig(path=tmp_path / "journal.db",
                                            maintenance_interval_s=3600, **kw), clock=clock)


@pytest.fixture
async def journal(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Journal]:
    j = await open_journal(tmp_path, clock)
    yield j
    await j.close()


async def retry(rig: Rig, times: int = 1) -> None:
    """The lane's retry timer fires (its delays are seconds; the test does not wait them)."""
    for _ in range(times):
        rig.lane.post("timeout", "retry")
        await settle()


async def lane_records(rig: Rig) -> list[tuple[str, str | None]]:
    out = []
    for r in await rig.journal.read_outbox(0, 10_000):
        if r.type.startswith("alarm."):
            continue
        data = json.loads(r.data_json)
        out.append((r.type, (data.get("identifiedVehicle") or {}).get("plate")))
    return out


async def test_cars_enter_while_the_disk_is_full_and_every_record_is_written_once_it_has_room(
        settings: Settings, journal: Journal, clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Hours of a full disk: the lane lets every car in, loses no record however many retries
    fail, and writes them all, in the order they happened, once the disk has room."""
    rig = make_rig(settings, journal, clock)
    disk = FullDisk(journal, monkeypatch)
    disk.full = True
    async with rig.running():
        for plate in CARS:
            await rig.arrive(plate)
            assert rig.barrier.commands[-1] == "raise", plate
            await rig.drive_through()
            assert rig.lane.state == "idle"
        assert rig.lane.refusals == 0
        assert rig.barrier.commands == ["raise", "lower"] * len(CARS)
        # Every car is inside as far as the lane knows: entering again is anti-passback.
        await retry(rig, 40)  # a long outage: every retry fails
        assert disk.refused > 40
        assert len(rig.lane.machine.unwritten) == 3 * len(CARS)
        assert await lane_records(rig) == []
        disk.full = False
        await retry(rig)
        assert not rig.lane.machine.unwritten
        # And the lane takes the next car as ever: nothing is left open or stuck.
        await rig.arrive("VIS0004")
        await rig.drive_through()
        assert rig.lane.state == "idle"
        assert rig.barrier.position == "down"
    expected = []
    for plate in [*CARS, "VIS0004"]:
        expected += [("gate.opened", None), ("session.started", plate), ("gate.closed", None)]
    assert await lane_records(rig) == expected
    for plate in CARS:
        assert rig.lane.access.stay_of(plate) is not None
    assert [a.alarm_id for a in journal.active_alarms()] == []


async def test_the_intercom_policy_sends_cars_to_the_intercom_while_records_are_held(
        settings: Settings, tmp_path: Path, clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    journal = await open_journal(tmp_path, clock, on_full="intercom")
    try:
        rig = make_rig(settings, journal, clock)
        disk = FullDisk(journal, monkeypatch)
        disk.full = True
        async with rig.running():
            await rig.arrive(CARS[0])  # the lane learns of the full disk from this car's write
            await rig.drive_through()
            await rig.arrive(CARS[1])
            assert (rig.lane.state, rig.lane.refusals) == ("refused", 1)
            assert rig.barrier.commands == ["raise", "lower"]
            assert rig.lane.recent[-1].decision == "journal_full"
            await rig.lane.vend("intercom", "intercom:desk")  # the person at the intercom
            await settle()
            assert rig.barrier.commands == ["raise", "lower", "raise"]
            await rig.drive_through()
            await rig.arrive(CARS[2])
            assert rig.lane.state == "refused"
            disk.full = False
            await retry(rig)
            assert not rig.lane.machine.unwritten
            rig.lane.post("timeout", "recheck")  # the refused car is decided again, and let in
            await settle()
            assert rig.barrier.commands[-1] == "raise"
            await rig.drive_through()
        started = [p for t, p in await lane_records(rig) if t == "session.started"]
        assert started == [CARS[0], CARS[1], CARS[2]]
    finally:
        await journal.close()


async def test_past_the_memory_cap_every_car_goes_to_the_intercom_with_an_alarm(
        settings: Settings, tmp_path: Path, clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    journal = await open_journal(tmp_path, clock, max_held_records=10)
    try:
        rig = make_rig(settings, journal, clock)
        disk = FullDisk(journal, monkeypatch)
        disk.full = True
        async with rig.running():
            admitted = 0
            for n in range(6):
                await rig.arrive(f"VIS100{n}")
                if rig.lane.state == "refused":
                    break
                admitted += 1
                await rig.drive_through()
            assert admitted == 4  # 3 records each: the fourth car's make 12 >= 10
            assert rig.lane.recent[-1].decision == "journal_full"
            assert "lane.records_held:entry-north" in [a.alarm_id
                                                       for a in journal.active_alarms()]
            disk.full = False
            await retry(rig)
            assert not rig.lane.machine.unwritten
        assert "lane.records_held:entry-north" not in [a.alarm_id
                                                       for a in journal.active_alarms()]
        started = [p for t, p in await lane_records(rig) if t == "session.started"]
        assert started == [f"VIS100{n}" for n in range(4)]
    finally:
        await journal.close()


async def test_a_car_let_in_while_the_disk_is_full_can_leave_before_its_entry_is_written(
        settings: Settings, journal: Journal, clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The lanes decide from the sessions they hold in memory: a car let in while nothing could
    be written is inside under its session id, leaves as a normal exit (not a lost ticket),
    and its end is written after its start, whichever lane retries first."""
    from tests.controllers.lanes import Lot

    entry = make_rig(settings, journal, clock)
    exit_config = next(c for c in settings.lanes if c.id == "exit")
    exit_ = Rig(exit_config, journal, clock, entry.lane.access, entry.lane.sessions,
                Lot())
    disk = FullDisk(journal, monkeypatch)
    disk.full = True
    async with entry.running(), exit_.running():
        await entry.arrive(PERMIT)
        await entry.drive_through()
        stay = entry.lane.access.stay_of(PERMIT)
        assert stay is not None  # inside, though nothing of it is written
        clock.advance(3600)
        await exit_.arrive(PERMIT)
        assert exit_.barrier.commands == ["raise"]
        await exit_.drive_through()
        assert exit_.lane.recent[-1].decision != "lost_ticket"
        disk.full = False
        await retry(exit_)  # first: its end must wait for the start
        assert exit_.lane.machine.unwritten
        await retry(entry)
        assert not entry.lane.machine.unwritten
        await retry(exit_)
        assert not exit_.lane.machine.unwritten
    sessions = [(r.type, json.loads(r.data_json)) for r in await journal.read_outbox(0, 100)
                if r.type.startswith("session.")]
    assert [(kind, data["sessionId"]) for kind, data in sessions] == [
        ("session.started", stay.session_id), ("session.ended", stay.session_id)]
    assert sessions[1][1]["exitReason"] == "normal"
    assert entry.lane.access.stay_of(PERMIT) is None
