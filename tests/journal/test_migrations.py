"""The schema's numbered migrations: a journal of any earlier version is brought up to date,
and the retention run finds what has expired through its indexes, not by reading every row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.config import JournalConfig
from gateway.core.clock import FakeClock
from gateway.journal import Journal, migrations
from gateway.journal.writer import EXPIRED_REFUSED_SQL, EXPIRED_SESSIONS_SQL
from tests.journal.test_journal import rows
from tests.journal.test_privacy import visit


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [version for version, _ in migrations()]
    assert versions == list(range(1, len(versions) + 1))


async def test_a_version_3_journal_is_migrated_and_keeps_its_rows(journal_path: Path,
                                                                   clock: FakeClock) -> None:
    con = sqlite3.connect(journal_path, isolation_level=None)
    for version, sql in migrations():
        if version <= 3:
            con.executescript(sql)
    con.execute("PRAGMA user_version = 3")
    con.execute("INSERT INTO sessions (session_id, plate, status, right_kind, entry_at,"
                " entry_mono, entry_boot, entry_synced, exit_at) VALUES"
                " ('s-1', 'OLD1', 'closed', 'visitor', '2025-01-01T08:00:00.000000Z', 0, 'b', 1,"
                " '2025-01-01T09:00:00.000000Z')")
    con.close()
    settings = JournalConfig(path=journal_path, maintenance_interval_s=3600)
    async with await Journal.open(settings, clock=clock) as j:
        assert (await j.stats()).schema_version == migrations()[-1][0] >= 4
        assert (await j.prune())["sessions_expired"] == 1  # found through the new index
    indexes = {name for (name,) in rows(journal_path,
                                        "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"sessions_by_exit", "outbox_violations_by_time"} <= indexes


@pytest.mark.parametrize(("sql", "params", "index"), [
    (EXPIRED_SESSIONS_SQL, ("2026-01-01T00:00:00.000000Z", 5000), "sessions_by_exit"),
    (EXPIRED_REFUSED_SQL, ("2026-01-01T00:00:00.000000Z", 10**9, 5000),
     "outbox_violations_by_time"),
])
async def test_the_retention_queries_use_their_indexes(
        journal_path: Path, clock: FakeClock, sql: str, params: tuple[object, ...],
        index: str) -> None:
    settings = JournalConfig(path=journal_path, maintenance_interval_s=3600)
    async with await Journal.open(settings, clock=clock) as j:
        for i in range(50):
            await visit(j, clock, f"s-{i}", f"P{i}", leave=i % 2 == 0)
    con = sqlite3.connect(journal_path)
    try:
        steps = [str(row[-1]) for row in con.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    finally:
        con.close()
    searches = [s for s in steps if s.startswith(("SEARCH", "SCAN"))]
    assert any(f"USING INDEX {index}" in s for s in searches), steps
    assert not any(s.startswith("SCAN") for s in searches), steps  # no row read in vain
