"""Recovering a corrupt journal: the lot's state comes back, and the sequence never repeats.

Each journal here holds what a lot holds (open and closed sessions, payments, bays, config
with versions, command nonces, technician settings, active alarms, audit, synced and unsynced
events) and is then damaged as an SD card damages it: 8 KiB overwritten in the middle, cut
short, or zeroed.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.config import JournalConfig, load_settings
from gateway.controllers.sessions import SessionBook
from gateway.core import events
from gateway.core.access import Access
from gateway.core.clock import FakeClock
from gateway.journal import (
    Audit,
    CloseSession,
    Journal,
    OpenSession,
    PutConfig,
    RecordPayment,
    SetBayState,
    seqmark,
)
from gateway.journal.rows import PutAlarm, PutSetting
from gateway.journal.seqmark import RESERVE, mark_path, read_mark
from tests.conftest import EXAMPLE

OPEN, CLOSED, BAYS, AUDIT, EVENTS, ACKED = 110, 90, 276, 530, 2000, 1500
CONFIG = {"tariffs": 3, "permits": 2, "command_nonces": 17}
SETTINGS = {"lot.state": '"closed"', "lane.mode:entry-b": '"closed"',
            "bay.service:A-1-01": '"off"'}
ALARMS = ("bus.port_missing:rs485-1", "camera.unreachable:entry-a")

# The state a recovery carries over, table by table: what each query reads of a journal.
STATE = {
    "sessions": "SELECT session_id, plate, entry_lane, entry_at FROM sessions"
                " WHERE status = 'open'",
    "payments": "SELECT payment_id, session_id, amount_minor FROM payments",
    "bay_state": "SELECT bay_id, state, healthy FROM bay_state",
    "config_cache": "SELECT kind, version, payload FROM config_cache c WHERE version ="
                    " (SELECT max(version) FROM config_cache WHERE kind = c.kind)",
    "settings": "SELECT key, value, actor FROM settings",
    "alarms": "SELECT alarm_id, message, details FROM alarms"
              " WHERE alarm_id <> 'journal.corrupt'",
    "audit": "SELECT id, action, subject FROM audit",
    "outbox": "SELECT seq, id, type, data FROM outbox WHERE acked_at IS NULL",
}


def rows(path: Path, sql: str) -> set[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return set(con.execute(sql).fetchall())
    finally:
        con.close()


def state(path: Path) -> dict[str, set[tuple[Any, ...]]]:
    return {table: rows(path, sql) for table, sql in STATE.items()}


async def build_lot(path: Path, clock: FakeClock) -> None:
    """A journal as a lot leaves it: every table filled, most events synced."""
    async with await Journal.open(JournalConfig(path=path), clock=clock) as j:
        for i in range(OPEN + CLOSED):
            s = clock.stamp()
            opened = OpenSession(f"s-{i:04d}", f"AB{i:04d}CD", "visitor", None, "entry-a",
                                 events.rfc3339(s.wall), s.mono, s.boot_id, s.synced)
            await j.commit([opened], [bay_event(clock, f"A-{i % BAYS:03d}")])
            clock.advance(7)
        for i in range(CLOSED):
            s = clock.stamp()
            await j.commit([CloseSession(f"s-{OPEN + i:04d}", "exit-a", events.rfc3339(s.wall),
                                         s.mono, s.boot_id, True, 60.0, True, 250, "EUR")])
        at = events.rfc3339(clock.now())
        await j.commit([RecordPayment(f"pay-{i:03d}", f"s-{i * 9:04d}", 400 + i, "EUR", "card",
                                      "pay_station", at) for i in range(12)])
        await j.commit([SetBayState(f"A-{i:03d}", "occupied" if i < OPEN else "free", at,
                                    "magnetic", True) for i in range(BAYS)])
        for kind, newest in CONFIG.items():
            await j.commit([PutConfig(kind, v, json.dumps({"kind": kind, "v": v, "pad": "x" * 90}),
                                      "mqtt", at) for v in range(1, newest + 1)])
        await j.commit([PutSetting(key, value, at, "technician:ana")
                        for key, value in SETTINGS.items()])
        await j.commit([PutAlarm(a, "critical", f"{a} is down", '{"since": 3}', "drivers", at)
                        for a in ALARMS])
        await j.commit([Audit(at, "technician:ana", "lane.mode", f"entry-{i}", "test")
                        for i in range(AUDIT)])
        for first in range(OPEN + CLOSED, EVENTS, 100):
            await j.commit((), [bay_event(clock, f"A-{i % BAYS:03d}")
                                for i in range(first, min(first + 100, EVENTS))])
        await j.mark_acked(range(1, ACKED + 1))
        assert j.last_seq == EVENTS


@pytest.fixture(scope="module")
def lot_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One lot's journal, built once; each test damages a copy of it."""
    path = tmp_path_factory.mktemp("lot") / "journal.db"
    asyncio.run(build_lot(path, FakeClock()))
    return path


@pytest.fixture
def journal_copy(lot_journal: Path, journal_path: Path) -> Path:
    """A copy of the lot's journal and its sequence mark, and the state it holds."""
    shutil.copy(lot_journal, journal_path)
    shutil.copy(mark_path(lot_journal), mark_path(journal_path))
    return journal_path


def bay_event(clock: FakeClock, bay: str) -> events.Event:
    return events.bay_changed(
        at=clock.now(), bay_id=bay, floor="1", zone="A", bay_type="regular", state="occupied",
        previous_state="free", source="magnetic", sensor_healthy=True)


def overwrite_middle(path: Path, size: int = 8192) -> None:
    """Overwrite `size` bytes in the middle of the file with noise, off any page boundary."""
    offset = path.stat().st_size // 2 + 1000
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(random.Random(15).randbytes(size))


def truncate(path: Path, size: int = 100_000) -> None:
    with path.open("r+b") as f:
        f.truncate(size)


def zero(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


async def reopen(path: Path, clock: FakeClock) -> Journal:
    return await Journal.open(JournalConfig(path=path, startup_check="full"), clock=clock)


def corrupt_alarm(journal: Journal) -> dict[str, Any]:
    (alarm,) = [a for a in journal.active_alarms() if a.alarm_id == "journal.corrupt"]
    return {"message": alarm.message, **alarm.details}


async def test_a_journal_overwritten_mid_file_keeps_the_cars_inside_and_the_lot_as_it_was(
        lot_journal: Path, journal_copy: Path, clock: FakeClock) -> None:
    before = state(lot_journal)
    mark = read_mark(lot_journal)
    assert mark is not None
    assert EVENTS <= mark <= EVENTS + RESERVE
    overwrite_middle(journal_copy)
    with pytest.raises(sqlite3.DatabaseError):  # the damage is real: a plain read fails
        rows(journal_copy, STATE["outbox"])
    async with await reopen(journal_copy, clock) as j:
        alarm = corrupt_alarm(j)
        after = state(journal_copy)
        new = {r for r in after["outbox"] if r[0] > EVENTS}  # journal.corrupt, raised now
        # Every table comes back whole: the overwritten pages held synced events only.
        assert {**after, "outbox": after["outbox"] - new} == before
        assert len(after["sessions"]) == OPEN
        assert {k for k, *_ in after["config_cache"]} == set(CONFIG)
        assert alarm["recovered"] == {
            "sessions": OPEN, "payments": 12, "bay_state": BAYS, "config_cache": len(CONFIG),
            "settings": len(SETTINGS), "alarms": len(ALARMS), "audit": AUDIT,
            "outbox": EVENTS - ACKED}
        assert alarm["partlyReadable"] == ["outbox"]
        assert alarm["unreadable"] == []
        assert alarm["configVersions"] == CONFIG
        assert alarm["message"].endswith(
            f"recovered {OPEN} open sessions, 12 payments, {BAYS} bays, 3 config kinds,"
            f" 3 settings, 2 alarms, {AUDIT} audit entries, {EVENTS - ACKED} unsynced events;"
            f" partly readable: outbox; events go on after sequence {mark}")
        # The unsynced events are still to be sent, and the sequence goes on past them.
        unsynced = await j.read_outbox(0, limit=1000)
        assert [r.seq for r in unsynced[:EVENTS - ACKED]] == list(range(ACKED + 1, EVENTS + 1))
        # The mark may be ahead of the last event: a gap the backend sees, never a reuse.
        assert alarm["sequenceAfter"] == mark
        assert await j.append(bay_event(clock, "A-001")) == mark + 2  # after journal.corrupt
        assert await j.integrity_check() == ["ok"]


async def test_a_journal_cut_short_keeps_what_it_still_holds_and_never_reuses_a_sequence(
        lot_journal: Path, journal_copy: Path, clock: FakeClock) -> None:
    before = state(lot_journal)
    truncate(journal_copy)
    async with await reopen(journal_copy, clock) as j:
        alarm = corrupt_alarm(j)
        after = state(journal_copy)
        # The first 100 KB hold the open sessions, payments, settings and alarms whole.
        for table in ("sessions", "payments", "settings", "alarms"):
            assert after[table] == before[table], table
        assert after["bay_state"] == after["audit"] == set()
        assert alarm["unreadable"] == ["bay_state", "config_cache", "audit"]
        assert alarm["partlyReadable"] == ["sessions", "outbox"]
        # What the file still says of its sequence is 1500 (acked); the newest events are
        # gone with its end. The mark beside it says more, so no sequence comes twice.
        assert await j.append(bay_event(clock, "A-001")) > EVENTS
        assert alarm["sequenceAfter"] >= EVENTS


async def test_a_zeroed_journal_recovers_nothing_but_its_sequence_goes_on(
        journal_copy: Path, clock: FakeClock) -> None:
    zero(journal_copy)
    async with await reopen(journal_copy, clock) as j:
        alarm = corrupt_alarm(j)
        assert alarm["recovered"] == {}
        assert alarm["unreadable"] == list(STATE)
        assert "recovered nothing; unreadable: sessions, payments" in alarm["message"]
        (raised,) = await j.read_outbox(0)  # the alarm itself, past every sequence given out
        assert EVENTS < raised.seq <= EVENTS + RESERVE + 1
        assert await j.append(bay_event(clock, "A-001")) == raised.seq + 1


async def test_after_recovery_the_session_book_still_has_the_cars_inside(
        journal_copy: Path, clock: FakeClock) -> None:
    overwrite_middle(journal_copy)
    settings = load_settings(EXAMPLE, env={})
    async with await reopen(journal_copy, clock) as j:
        book = SessionBook(settings, j, Access(settings.lot), clock)
        assert await book.restore() == OPEN
        assert sorted(book.access.inside) == [f"s-{i:04d}" for i in range(OPEN)]
        paid = {f"s-{i * 9:04d}" for i in range(12)}  # a paying visitor may still leave
        assert set(book.paid_until) == paid


async def test_the_mark_beside_the_journal_stays_ahead_of_every_sequence(
        journal_path: Path, clock: FakeClock) -> None:
    assert read_mark(journal_path) is None  # a first start has none, and needs none
    async with await Journal.open(JournalConfig(path=journal_path), clock=clock) as j:
        for _ in range(25):
            seqs = await j.commit((), [bay_event(clock, f"A-{i:03d}") for i in range(99)])
            mark = read_mark(journal_path)
            assert mark is not None
            assert mark >= seqs[-1]
        assert mark <= j.last_seq + RESERVE  # rewritten ahead, not at every commit
    # A sound journal goes on where it stopped: the mark is only for a journal that was lost.
    async with await Journal.open(JournalConfig(path=journal_path), clock=clock) as j:
        assert await j.append(bay_event(clock, "A-001")) == 25 * 99 + 1


async def test_a_journal_deleted_beside_its_mark_does_not_start_again_at_1(
        journal_path: Path, clock: FakeClock) -> None:
    async with await Journal.open(JournalConfig(path=journal_path), clock=clock) as j:
        await j.append(bay_event(clock, "A-001"))
    for name in (journal_path.name, journal_path.name + "-wal", journal_path.name + "-shm"):
        (journal_path.parent / name).unlink(missing_ok=True)
    async with await Journal.open(JournalConfig(path=journal_path), clock=clock) as j:
        assert await j.append(bay_event(clock, "A-001")) > RESERVE


async def test_a_mark_that_cannot_be_written_does_not_stop_the_lanes(
        journal_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(journal: Path, value: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(seqmark, "write_mark", refuse)
    async with await Journal.open(JournalConfig(path=journal_path), clock=clock) as j:
        assert [await j.append(bay_event(clock, "A-001")) for _ in range(3)] == [1, 2, 3]
    assert read_mark(journal_path) is None
