"""The journal: group commit, the outbox contract, retention, and bad days on the disk."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from gateway.config import JournalConfig
from gateway.core import events
from gateway.core.clock import FakeClock
from gateway.core.events import Event
from gateway.journal import (
    Alarm,
    Audit,
    CloseSession,
    Journal,
    JournalClosedError,
    JournalError,
    JournalFullError,
    JournalLockedError,
    JournalReader,
    JournalReadOnlyError,
    JournalWriteError,
    OpenSession,
    PutConfig,
    RecordPayment,
    SetBayState,
)
from tests.conftest import SOURCE
from tests.core.schemas import validate_cloudevent


def bay_event(clock: FakeClock, bay: str = "A-001", state: str = "occupied") -> Event:
    previous = "free" if state == "occupied" else "occupied"
    return events.bay_changed(
        at=clock.now(), bay_id=bay, floor="1", zone="A", bay_type="regular", state=state,
        previous_state=previous, source="magnetic", sensor_healthy=True)


def bay_change(clock: FakeClock, bay: str = "A-001", state: str = "occupied"
               ) -> tuple[SetBayState, Event]:
    ev = bay_event(clock, bay, state)
    return SetBayState(bay, state, ev.time, "magnetic", True), ev  # type: ignore[arg-type]


def open_session(clock: FakeClock, session_id: str) -> OpenSession:
    s = clock.stamp()
    return OpenSession(session_id, "AB123CD", "visitor", None, "entry-1",
                       events.rfc3339(s.wall), s.mono, s.boot_id, s.synced)


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


async def on_write_connection(journal: Journal, sql: str) -> None:
    """Run `sql` on the writer's own connection, in its thread: the disk changing under it."""
    await journal._db.run(lambda conn: conn.execute(sql))


def smash_table(path: Path, table: str) -> None:
    """Overwrite the root page of a table's B-tree, as a failing SD card might."""
    (root,) = rows(path, f"SELECT rootpage FROM sqlite_schema WHERE name = '{table}'")[0]
    with path.open("r+b") as f:
        f.seek((int(root) - 1) * 4096)  # type: ignore[call-overload]
        f.write(b"\xff" * 4096)


async def test_commit_applies_state_and_appends_event(journal: Journal, clock: FakeClock,
                                                      journal_path: Path) -> None:
    change, ev = bay_change(clock)
    assert await journal.commit([change], [ev]) == [1]
    assert rows(journal_path, "SELECT bay_id, state, healthy FROM bay_state") == [
        ("A-001", "occupied", 1)]
    (record,) = await journal.read_outbox(after=0)
    assert (record.seq, record.id, record.type, record.acked) == (1, ev.id, "bay.changed", False)
    envelope = json.loads(record.to_json(SOURCE))
    validate_cloudevent(envelope)
    assert envelope["seq"] == 1
    assert envelope["data"] == ev.data


async def test_concurrent_producers_share_commits_and_get_a_gapless_sequence(
        journal: Journal, clock: FakeClock) -> None:
    async def producer(n: int) -> list[int]:
        seqs = []
        for k in range(25):
            change, ev = bay_change(clock, f"bay-{n}", "occupied" if k % 2 else "free")
            seqs += await journal.commit([change], [ev])
        return seqs

    results = await asyncio.gather(*(producer(n) for n in range(16)))
    every = sorted(s for seqs in results for s in seqs)
    assert every == list(range(1, 16 * 25 + 1))
    for seqs in results:  # each producer sees its own writes in order
        assert seqs == sorted(seqs)
    stats = await journal.stats()
    assert stats.commits < 16 * 25 / 4, "group commit should share fsyncs between producers"
    assert stats.mean_group_size > 4
    assert [r.seq for r in await journal.read_outbox(0, limit=1000)] == every


async def test_a_refused_write_fails_alone_and_leaves_no_gap(journal: Journal,
                                                             clock: FakeClock) -> None:
    await journal.commit([open_session(clock, "s-1")], [bay_event(clock)])

    async def write(session_id: str) -> list[int]:
        return await journal.commit([open_session(clock, session_id)], [bay_event(clock)])

    # Started together, so they land in one group; s-1 already exists.
    outcomes = await asyncio.gather(write("s-2"), write("s-1"), write("s-3"),
                                    return_exceptions=True)
    assert isinstance(outcomes[1], JournalWriteError)
    assert "UNIQUE" in str(outcomes[1])
    assert sorted([outcomes[0][0], outcomes[2][0]]) == [2, 3]  # type: ignore[index]
    assert [r.seq for r in await journal.read_outbox(0)] == [1, 2, 3]
    assert journal.active_alarms() == []  # the caller's bug is not a journal alarm


async def test_sessions_config_and_audit(journal: Journal, clock: FakeClock,
                                         journal_path: Path) -> None:
    await journal.commit([open_session(clock, "s-1")])
    clock.advance(3600)
    s = clock.stamp()
    await journal.commit([
        CloseSession("s-1", "exit-1", events.rfc3339(s.wall), s.mono, s.boot_id, s.synced,
                     3600.0, True, 250, "EUR"),
        Audit(events.rfc3339(s.wall), "technician:jo", "manual_vend", "exit-1", "intercom"),
    ])
    assert rows(journal_path, "SELECT status, duration_s, fee_minor FROM sessions") == [
        ("closed", 3600.0, 250)]
    assert rows(journal_path, "SELECT actor, action, reason FROM audit") == [
        ("technician:jo", "manual_vend", "intercom")]

    for version in (1, 2):
        await journal.commit([PutConfig("permits", version, json.dumps({"v": version}),
                                        "mqtt", events.rfc3339(s.wall))])
    current = await journal.config_current("permits")
    assert current is not None
    assert (current.version, json.loads(current.payload)) == (2, {"v": 2})
    assert await journal.config_current("tariffs") is None
    stats = await journal.stats()
    assert (stats.sessions_closed, stats.config_versions, stats.audit_entries) == (1, 2, 1)


async def test_unchanged_bay_state_is_not_rewritten(journal: Journal, clock: FakeClock,
                                                    journal_path: Path) -> None:
    change, _ = bay_change(clock, "A-001", "occupied")
    await journal.commit([change])
    clock.advance(60)
    again, _ = bay_change(clock, "A-001", "occupied")
    await journal.commit([again])
    (since,) = rows(journal_path, "SELECT since FROM bay_state")[0]
    assert since == change.since  # the first time it became occupied
    with pytest.raises(ValueError, match="bay state"):
        SetBayState("A-001", "parked", "", "manual", True)  # type: ignore[arg-type]


async def test_acks_advance_the_cursor_in_order_only(journal: Journal, clock: FakeClock) -> None:
    for _ in range(10):
        await journal.append(bay_event(clock))
    assert await journal.mark_acked([1, 2, 3]) == 3
    assert await journal.mark_acked([5, 6]) == 3  # 4 is still out
    assert [r.seq for r in await journal.read_outbox(after=0)] == [4, 7, 8, 9, 10]
    assert await journal.mark_acked([4]) == 6
    assert await journal.mark_acked([]) == 6
    assert await journal.mark_acked([99]) == 6  # never issued: ignored
    stats = await journal.stats()
    assert (stats.acked_through, stats.events_unsynced) == (6, 4)


async def test_sequence_and_acks_survive_a_restart(journal_path: Path, clock: FakeClock) -> None:
    async with await Journal.open(JournalConfig(path=journal_path), clock=clock) as j:
        for _ in range(5):
            await j.append(bay_event(clock))
        await j.mark_acked(range(1, 4))
    async with await Journal.open(JournalConfig(path=journal_path), clock=clock) as j:
        assert (j.last_seq, j.acked_through) == (5, 3)
        assert await j.append(bay_event(clock)) == 6


async def test_retention_prunes_only_old_synced_events(journal_path: Path,
                                                       clock: FakeClock) -> None:
    settings = JournalConfig(path=journal_path, retention_days=7, maintenance_interval_s=3600)
    async with await Journal.open(settings, clock=clock) as j:
        for _ in range(6):
            await j.append(bay_event(clock))
        await j.mark_acked([1, 2, 3, 4])  # 5 and 6 never reached the backend
        clock.advance(8 * 86400)
        await j.append(bay_event(clock))
        await j.mark_acked([7])  # acked but new
        result = await j.prune()
        assert result["pruned_by_age"] == 4
        assert [r.seq for r in await j.read_outbox(0)] == [5, 6]
        await j.mark_acked([5, 6])
        clock.advance(8 * 86400)
        await j.prune()
    # Everything synced and old is gone, but the newest event keeps the sequence going.
    assert rows(journal_path, "SELECT seq FROM outbox") == [(7,)]
    async with await Journal.open(settings, clock=clock) as j:
        assert await j.append(bay_event(clock)) == 8


async def test_pruning_gives_the_pages_back_to_the_file_system(journal_path: Path,
                                                               clock: FakeClock) -> None:
    settings = JournalConfig(path=journal_path, retention_days=7, maintenance_interval_s=3600)
    async with await Journal.open(settings, clock=clock) as j:
        await fill(j, clock, 100)  # ~400 KiB
        await j.mark_acked(range(1, 101))
        clock.advance(8 * 86400)
        await j.append(bay_event(clock))
        (before,) = rows(journal_path, "PRAGMA page_count")[0]
        assert (await j.prune())["pruned_by_age"] == 100
        assert rows(journal_path, "PRAGMA freelist_count") == [(0,)]
        (after,) = rows(journal_path, "PRAGMA page_count")[0]
        assert isinstance(before, int)
        assert isinstance(after, int)
        assert after < before - 90  # a page per event went back


async def fill(j: Journal, clock: FakeClock, count: int) -> None:
    """Events of ~2 KiB: each takes a 4 KiB page of its own."""
    for _ in range(count):
        await j.append(events.alarm_raised(
            at=clock.now(), alarm_id="test.fill", code="test.fill", severity="info",
            message="fill", component="test", details={"note": "x" * 2000}))


async def test_size_cap_prunes_synced_first_and_alarms_instead_of_dropping(
        journal_path: Path, clock: FakeClock) -> None:
    settings = JournalConfig(path=journal_path, max_size_mb=1, maintenance_interval_s=3600)
    async with await Journal.open(settings, clock=clock) as j:
        await fill(j, clock, 200)  # ~800 KiB, then synced
        await j.mark_acked(range(1, 201))
        await fill(j, clock, 100)  # ~400 KiB, not synced: 1.2 MiB in all
        result = await j.prune()
        assert result["pruned_by_size"] > 0
        assert result["used_bytes"] <= 2**20
        assert j.active_alarms() == []
        # The synced events went, oldest first; every unsynced one is still there.
        assert [r.seq for r in await j.read_outbox(0, limit=1000)] == list(range(201, 301))

        await fill(j, clock, 200)  # 300 unsynced, ~1.2 MiB: more than the cap can hold
        result = await j.prune()
        assert result["used_bytes"] > 2**20
        assert [a.alarm_id for a in j.active_alarms()] == ["journal.over_capacity"]
        await j.append(bay_event(clock))  # the alarm is journaled before the next write
        records = await j.read_outbox(0, limit=1000)
        assert [r.seq for r in records][:300] == list(range(201, 501))  # nothing dropped
        (alarm,) = [json.loads(r.data_json) for r in records if "over_capacity" in r.data_json]
        assert alarm["severity"] == "critical"
        assert alarm["details"]["unsyncedEvents"] == 300

        await j.mark_acked(range(1, j.last_seq + 1))
        await j.prune()
        assert j.active_alarms() == []


async def test_disk_full_is_a_clear_error_and_an_alarm_without_corruption(
        journal_path: Path, clock: FakeClock) -> None:
    settings = JournalConfig(path=journal_path, maintenance_interval_s=3600)
    big = {"note": "y" * 3000}
    async with await Journal.open(settings, clock=clock, page_limit=64) as j:
        async def write() -> int:
            return await j.append(events.alarm_raised(
                at=clock.now(), alarm_id="t", code="t", severity="info", message="m",
                component="test", details=big))

        written = 0
        error: JournalFullError | None = None
        for _ in range(200):
            try:
                written = await write()
            except JournalFullError as e:
                error = e
                break
        assert error is not None, "the page limit was never reached"
        assert "full" in str(error)
        assert [a.alarm_id for a in j.active_alarms()] == ["journal.write_failed.disk_full"]
        assert await j.integrity_check() == ["ok"]
        assert j.last_seq == written  # nothing half-written, no gap

        # Room again (the technician freed space): writes succeed and the alarm clears.
        await on_write_connection(j, "PRAGMA max_page_count = 100000")
        await j.append(bay_event(clock))
        await j.append(bay_event(clock))
        assert j.active_alarms() == []
        # The alarm is journaled ahead of the write that found the disk writable again.
        types = [r.type for r in await j.read_outbox(written, limit=10)]
        assert types == ["alarm.raised", "bay.changed", "alarm.cleared", "bay.changed"]
        assert (await j.stats()).write_errors == 1


async def test_read_only_journal_is_a_clear_error_and_an_alarm(journal: Journal,
                                                               clock: FakeClock) -> None:
    await journal.append(bay_event(clock))
    await on_write_connection(journal, "PRAGMA query_only = 1")  # as a remount read-only would
    with pytest.raises(JournalReadOnlyError, match="read-only"):
        await journal.append(bay_event(clock))
    assert [a.alarm_id for a in journal.active_alarms()] == ["journal.write_failed.read_only"]
    await on_write_connection(journal, "PRAGMA query_only = 0")
    assert await journal.append(bay_event(clock)) == 3  # after the alarm, seq 2
    types = [r.type for r in await journal.read_outbox(0)]
    # The clearing is journaled by the writer once a write succeeds: with or after seq 3.
    assert types[:3] == ["bay.changed", "alarm.raised", "bay.changed"]
    assert types[3:] in ([], ["alarm.cleared"])
    assert not journal.active_alarms()
    assert await journal.integrity_check() == ["ok"]


async def test_a_corrupt_file_is_moved_aside_and_a_fresh_journal_starts(
        journal_path: Path, clock: FakeClock) -> None:
    journal_path.write_bytes(b"this is not a database" * 200)
    async with await Journal.open(JournalConfig(path=journal_path), clock=clock) as j:
        assert [a.alarm_id for a in j.active_alarms()] == ["journal.corrupt"]
        assert await j.append(bay_event(clock)) == 2  # seq 1 is the alarm itself
        (alarm, _) = await j.read_outbox(0)
        data = json.loads(alarm.data_json)
        assert alarm.type == "alarm.raised"
        assert data["alarmId"] == "journal.corrupt"
    aside = list(journal_path.parent.glob("journal.db.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not a database")


async def reopen_damaged(path: Path, clock: FakeClock, *, written: int, acked: int) -> Journal:
    """Write `written` bay changes, sync the first `acked`, smash the bay_state table, reopen."""
    async with await Journal.open(JournalConfig(path=path), clock=clock) as j:
        for i in range(written):
            change, ev = bay_change(clock, f"bay-{i}")
            await j.commit([change], [ev])
        await j.mark_acked(range(1, acked + 1))
    smash_table(path, "bay_state")  # the outbox pages stay readable
    return await Journal.open(JournalConfig(path=path, startup_check="full"), clock=clock)


async def test_a_damaged_journal_keeps_its_sequence_and_unsynced_events(
        journal_path: Path, clock: FakeClock) -> None:
    async with await reopen_damaged(journal_path, clock, written=300, acked=290) as j:
        assert [a.alarm_id for a in j.active_alarms()] == ["journal.corrupt"]
        salvaged = [r.seq for r in await j.read_outbox(0, limit=1000)]
        assert salvaged[:10] == list(range(291, 301))  # the unsynced ones came across
        assert salvaged[10] > 300  # the alarm follows on past the mark: a gap, never a reuse
        assert await j.integrity_check() == ["ok"]


async def test_a_damaged_journal_with_everything_synced_keeps_its_sequence(
        journal_path: Path, clock: FakeClock) -> None:
    async with await reopen_damaged(journal_path, clock, written=50, acked=50) as j:
        # Nothing to salvage, but the sequence goes on: the alarm is 51, not 1.
        (alarm,) = await j.read_outbox(0)
        assert alarm.seq > 50
        assert await j.append(bay_event(clock)) == alarm.seq + 1


async def test_a_second_daemon_is_refused(journal: Journal, journal_path: Path,
                                          clock: FakeClock) -> None:
    with pytest.raises(JournalLockedError, match="another process"):
        await Journal.open(JournalConfig(path=journal_path), clock=clock)


async def test_a_newer_schema_is_refused_not_clobbered(journal_path: Path,
                                                       clock: FakeClock) -> None:
    con = sqlite3.connect(journal_path)
    con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(JournalError, match="newer"):
        await Journal.open(JournalConfig(path=journal_path), clock=clock)


async def test_close_finishes_pending_writes_then_refuses(journal_path: Path,
                                                          clock: FakeClock) -> None:
    j = await Journal.open(JournalConfig(path=journal_path), clock=clock)
    writes = [asyncio.create_task(j.append(bay_event(clock))) for _ in range(20)]
    await asyncio.sleep(0)
    await j.close()
    assert sorted([await w for w in writes]) == list(range(1, 21))
    with pytest.raises(JournalClosedError):
        await j.append(bay_event(clock))
    await j.close()  # idempotent


async def test_a_dead_writer_fails_callers_instead_of_hanging_them(
        journal: Journal, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: Journal, batch: object) -> None:
        raise RuntimeError("a bug in the writer")

    monkeypatch.setattr(Journal, "_write_batch", broken)
    with pytest.raises(JournalError, match="writer stopped"):
        await asyncio.wait_for(journal.append(bay_event(clock)), timeout=5)
    with pytest.raises(JournalClosedError):
        await journal.append(bay_event(clock))


async def test_raise_and_clear_alarm_once_each(journal: Journal, clock: FakeClock) -> None:
    alarm = Alarm("gate.fault:exit-1", "critical", "barrier did not close", {"lane": "exit-1"},
                  component="lane")
    await journal.raise_alarm(alarm)
    await journal.raise_alarm(alarm)
    await journal.clear_alarm("gate.fault:exit-1", "barrier closed")
    await journal.clear_alarm("gate.fault:exit-1")
    records = await journal.read_outbox(0)
    assert [r.type for r in records] == ["alarm.raised", "alarm.cleared"]
    assert json.loads(records[0].data_json)["code"] == "gate.fault"


async def test_an_alarm_raised_while_the_disk_refuses_writes_is_journaled_later(
        journal: Journal, clock: FakeClock) -> None:
    await on_write_connection(journal, "PRAGMA query_only = 1")
    alarm = Alarm("gate.fault:exit-1", "critical", "barrier did not close", component="lane")
    await journal.raise_alarm(alarm)  # does not raise: the alarm stands in memory
    assert "gate.fault:exit-1" in [a.alarm_id for a in journal.active_alarms()]
    await on_write_connection(journal, "PRAGMA query_only = 0")
    await journal.append(bay_event(clock))
    records = [json.loads(r.data_json) for r in await journal.read_outbox(0)
               if r.type == "alarm.raised"]
    assert [r["alarmId"] for r in records] == ["journal.write_failed.read_only",
                                               "gate.fault:exit-1"]


async def test_reader_sees_committed_data_while_the_daemon_writes(
        journal: Journal, journal_path: Path, clock: FakeClock) -> None:
    for i in range(30):
        await journal.append(bay_event(clock, f"b{i}"))
    reader = await JournalReader.open(journal_path)
    try:
        assert [r.seq for r in await reader.tail(3)] == [28, 29, 30]
        assert [r.seq async for r in reader.iter_events(after=25, chunk=2)] == [26, 27, 28, 29,
                                                                                 30]
        stats = await reader.stats()
        assert (stats["last_seq"], stats["events_unsynced"]) == (30, 30)
    finally:
        await reader.close()
    with pytest.raises(JournalError, match="no journal"):
        await JournalReader.open(journal_path.with_name("missing.db"))


async def test_a_restarted_gateway_reads_back_open_sessions_payments_and_bays(
        journal_path: Path, clock: FakeClock) -> None:
    async with await Journal.open(JournalConfig(path=journal_path), clock=clock) as j:
        await j.commit([open_session(clock, "s-1"), open_session(clock, "s-2")], [])
        s = clock.stamp()
        await j.commit([CloseSession("s-1", "exit-1", events.rfc3339(s.wall), s.mono, s.boot_id,
                                     True, 60.0, True, 250, "EUR")], [])
        paid = RecordPayment("pay-1", "s-2", 400, "EUR", "card", "pay_station",
                             events.rfc3339(s.wall), None)
        await j.commit([paid, paid], [])  # delivered twice: kept once
        change, ev = bay_change(clock, "B-7")
        await j.commit([change], [ev])
    async with await Journal.open(JournalConfig(path=journal_path), clock=clock) as j:
        assert [(r.session_id, r.plate, r.entry_lane) for r in await j.open_sessions()] == [
            ("s-2", "AB123CD", "entry-1")]
        assert [(p.payment_id, p.amount_minor) for p in await j.payments("s-2")] == [
            ("pay-1", 400)]
        assert await j.payments("s-1") == []
        bays = await j.bay_states()
        assert (bays["B-7"].state, bays["B-7"].healthy) == ("occupied", True)


async def test_an_active_alarm_survives_a_restart_until_cleared(journal_path: Path,
                                                                clock: FakeClock) -> None:
    settings = JournalConfig(path=journal_path, maintenance_interval_s=3600)
    alarm = Alarm("bus.port:rs485", "critical", "no port /dev/ttyAMA0", {"port": "/dev/ttyAMA0"},
                  component="bus")
    async with await Journal.open(settings, clock=clock) as j:
        await j.raise_alarm(alarm)
        await j.raise_alarm(Alarm("gate.fault:exit-1", "warning", "slow", component="lane"))
        await j.clear_alarm("gate.fault:exit-1")
    async with await Journal.open(settings, clock=clock) as j:
        (restored,) = j.active_alarms()
        assert (restored.alarm_id, restored.severity, restored.details, restored.component) == (
            "bus.port:rs485", "critical", {"port": "/dev/ttyAMA0"}, "bus")
        assert restored.raised_at == events.rfc3339(clock.now())
        await j.raise_alarm(alarm)  # the cause is still there: no second alarm.raised
        await j.clear_alarm("bus.port:rs485", "port back")
    async with await Journal.open(settings, clock=clock) as j:
        assert j.active_alarms() == []
        types = [r.type for r in await j.read_outbox(0)]
        assert types == ["alarm.raised", "alarm.raised", "alarm.cleared", "alarm.cleared"]


async def test_an_acknowledged_alarm_is_cleared_and_audited(journal_path: Path,
                                                            clock: FakeClock) -> None:
    settings = JournalConfig(path=journal_path, maintenance_interval_s=3600)
    async with await Journal.open(settings, clock=clock) as j:
        await j.raise_alarm(Alarm("camera.stale:exit", "warning", "no frame", component="camera"))
        with pytest.raises(KeyError):
            await j.acknowledge_alarm("no-such-alarm", actor="cli:alice")
        acked = await j.acknowledge_alarm("camera.stale:exit", actor="cli:alice")
        assert acked.alarm_id == "camera.stale:exit"
        assert j.active_alarms() == []
        cleared = json.loads((await j.read_outbox(0))[-1].data_json)
        assert cleared["alarmId"] == "camera.stale:exit"
        assert "cli:alice" in cleared["message"]
    assert rows(journal_path, "SELECT actor, action, subject FROM audit") == [
        ("cli:alice", "alarm.ack", "camera.stale:exit")]
    async with await Journal.open(settings, clock=clock) as j:
        assert j.active_alarms() == []


async def test_a_write_failure_alarm_of_the_last_run_clears_on_the_first_good_write(
        journal_path: Path, clock: FakeClock) -> None:
    settings = JournalConfig(path=journal_path, maintenance_interval_s=3600)
    async with await Journal.open(settings, clock=clock) as j:
        await j.raise_alarm(Alarm("other", "warning", "m"))
    # The last run stopped while its writes failed (the alarm was written, its clearing not).
    con = sqlite3.connect(journal_path)
    with con:
        con.execute("INSERT INTO alarms VALUES ('journal.write_failed.disk_full', 'critical',"
                    " 'full', '{}', 'journal', '2026-01-01T00:00:00Z')")
    con.close()
    async with await Journal.open(settings, clock=clock) as j:
        assert {a.alarm_id for a in j.active_alarms()} == {"journal.write_failed.disk_full",
                                                            "other"}
        await j.append(bay_event(clock))
        assert {a.alarm_id for a in j.active_alarms()} == {"other"}


async def test_a_crash_in_maintenance_is_an_alarm_and_maintenance_goes_on(
        journal_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """An OverflowError from pruning (a retention value too large) ended the maintenance task
    with nothing logged and no alarm."""
    calls = 0

    async def overflowing(self: Journal) -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OverflowError("date value out of range")
        return {"pruned_by_age": 0, "pruned_by_size": 0, "used_bytes": 0}

    monkeypatch.setattr(Journal, "_prune", overflowing)
    settings = JournalConfig(path=journal_path, maintenance_interval_s=0.01)
    async with await Journal.open(settings, clock=clock) as j:
        for _ in range(200):
            if calls >= 1 and "journal.maintenance_failed" in {a.alarm_id for a in
                                                               j.active_alarms()}:
                break
            await asyncio.sleep(0.01)
        assert "journal.maintenance_failed" in {a.alarm_id for a in j.active_alarms()}
        for _ in range(200):
            if calls >= 3:
                break
            await asyncio.sleep(0.01)
        assert calls >= 3  # it went on
        assert "journal.maintenance_failed" not in {a.alarm_id for a in j.active_alarms()}
