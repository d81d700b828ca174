"""Personal data in the journal: each retention keeps exactly what it should, a purge leaves
no trace of the plate in the file or its WAL, and what the backend lacks is never touched."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.config import JournalConfig
from gateway.core import events
from gateway.core.clock import FakeClock
from gateway.journal import Audit, CloseSession, Journal, OpenSession, RecordPayment
from gateway.journal.reader import journal_files
from tests.journal.test_journal import rows

DAY = 86400
PLATE = "ZX98QWE"


async def visit(j: Journal, clock: FakeClock, sid: str, plate: str, *, leave: bool = True,
                synced: bool = True) -> None:
    """A car comes in, pays and (unless `leave` is false) goes out; one event names it."""
    s = clock.stamp()
    at = events.rfc3339(s.wall)
    changes: list[object] = [
        OpenSession(sid, plate, "visitor", None, "entry-1", at, s.mono, s.boot_id, s.synced),
        RecordPayment(f"pay-{sid}", sid, 250, "EUR", "card", "pay_station", at)]
    if leave:
        changes.append(CloseSession(sid, "exit-1", at, s.mono, s.boot_id, s.synced, 60.0, True,
                                    250, "EUR"))
    (seq,) = await j.commit(changes, [events.violation_detected(  # type: ignore[arg-type]
        at=clock.now(), kind="overstay", plate=plate, session_id=sid)])
    if synced:
        await j.mark_acked([seq])


async def test_each_retention_keeps_exactly_what_it_should(journal_path: Path,
                                                           clock: FakeClock) -> None:
    settings = JournalConfig(path=journal_path, retention_days=30, sessions_retention_days=90,
                             audit_retention_days=365, maintenance_interval_s=3600)
    async with await Journal.open(settings, clock=clock) as j:
        await j.commit([Audit(events.rfc3339(clock.now()), "cli:tech", "gate.open")])
        await visit(j, clock, "old-closed", "OLD1")
        await visit(j, clock, "old-open", "OLD2", leave=False)
        await visit(j, clock, "old-unsynced", "OLD3", synced=False)
        clock.advance(300 * DAY)
        await j.commit([Audit(events.rfc3339(clock.now()), "cli:tech", "lot.state")])
        await visit(j, clock, "mid-closed", "MID1")  # 70 days old at the end
        clock.advance(70 * DAY)
        await visit(j, clock, "new-closed", "NEW1")
        result = await j.prune()
    assert result["sessions_expired"] == 2  # old-closed, old-unsynced (the session is closed)
    assert result["payments_expired"] == 2
    assert result["audit_expired"] == 1
    assert sorted(rows(journal_path, "SELECT session_id, status FROM sessions")) == [
        ("mid-closed", "closed"), ("new-closed", "closed"), ("old-open", "open")]
    assert sorted(rows(journal_path, "SELECT session_id FROM payments")) == [
        ("mid-closed",), ("new-closed",), ("old-open",)]
    assert rows(journal_path, "SELECT action FROM audit") == [("lot.state",)]
    # Synced events older than 30 days went; the unsynced one stays however old it is (and
    # the synced ones after it wait for it: pruning stops at `acked_through`).
    plates = [json.loads(d)["plate"] for (d,) in rows(journal_path,
                                                       "SELECT data FROM outbox ORDER BY seq")]
    assert plates == ["OLD3", "MID1", "NEW1"]


async def test_a_backlog_is_worked_off_a_batch_per_run(journal_path: Path,
                                                       clock: FakeClock) -> None:
    settings = JournalConfig(path=journal_path, sessions_retention_days=1, prune_batch=100,
                             maintenance_interval_s=3600)
    async with await Journal.open(settings, clock=clock) as j:
        for i in range(250):
            await visit(j, clock, f"s-{i}", f"P{i}")
        clock.advance(2 * DAY)
        assert [(await j.prune())["sessions_expired"] for _ in range(4)] == [100, 100, 50, 0]


async def test_a_purge_removes_the_plate_from_the_file_and_its_wal(journal_path: Path,
                                                                   clock: FakeClock) -> None:
    settings = JournalConfig(path=journal_path, maintenance_interval_s=3600)
    async with await Journal.open(settings, clock=clock) as j:
        for i in range(3):
            await visit(j, clock, f"gone-{i}", PLATE)
        await visit(j, clock, "other", "KEEP123")
        await visit(j, clock, "inside", PLATE, leave=False)  # the car is in the lot now
        await visit(j, clock, "late", PLATE, synced=False)  # the backend lacks this one
        exported = await j.plate_records(PLATE)
        assert [s["session_id"] for s in exported["sessions"]] == [
            "gone-0", "gone-1", "gone-2", "inside", "late"]
        assert exported["events_total"] == 5
        result = await j.purge_plate(PLATE, actor="cli:dpo",
                                     removed_elsewhere={"recent_reads": 2, "crops": 1})
        assert result == {"recent_reads": 2, "crops": 1, "sessions": 4, "payments": 4,
                          "events": 4, "open_sessions_kept": 1, "unsynced_events_kept": 1}
        left = await j.plate_records(PLATE)
        assert [s["session_id"] for s in left["sessions"]] == ["inside"]
        assert left["events_total"] == 1
        data = b"".join(p.read_bytes() for p in journal_files(journal_path) if p.exists())
        # Only the open session (its row and its entry in the open-by-plate index) and the
        # unsynced event still name it: the text of each closed session and synced event was
        # overwritten, in the file and the WAL.
        assert data.count(PLATE.encode()) == 3
        assert b"KEEP123" in data
        (audit,) = rows(journal_path,
                        "SELECT actor, subject, details FROM audit WHERE action = 'privacy.purge'")
        assert audit[:2] == ("cli:dpo", None)
        assert PLATE not in str(audit[2])
        assert json.loads(str(audit[2]))["sessions"] == 4
