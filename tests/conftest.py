"""Shared fixtures. Every event any test writes into a journal is checked against its schema."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import structlog
from jsonschema import ValidationError

from gateway.config import JournalConfig
from gateway.core.clock import FakeClock
from gateway.core.events import envelope_json, source_uri
from gateway.journal import Journal
from gateway.journal.reserve import MB, Reserve
from tests.core.schemas import validate_cloudevent

SOURCE = source_uri("test-lot", "gw-1")
EXAMPLE = Path(__file__).parent.parent / "config" / "gateway.example.toml"


@pytest.fixture(autouse=True)
def _validate_journaled_events(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Wrap the journal's one write path: no event reaches the outbox unvalidated.

    A violation fails the write and, at teardown, the test: a caller that lives through a
    failed write (a lane keeps the record and retries it) turned it into a log line, and a
    gate.opened without the commandId its schema requires went unnoticed that way.
    """
    original = Journal._apply
    violations: list[str] = []

    async def checked(self: Journal, batch: Sequence[object]) -> list[list[int]]:
        for write in batch:
            for ev in write.events:  # type: ignore[attr-defined]
                try:
                    validate_cloudevent(json.loads(envelope_json(
                        source=SOURCE, sequence=1, id=ev.id, type=ev.type.value,
                        time=ev.time, data_json=ev.data_json)))
                except ValidationError as e:
                    violations.append(f"{ev.type.value} {ev.data_json}: {e.message}")
                    raise
        return await original(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(Journal, "_apply", checked)
    yield
    if violations:
        pytest.fail("events that break their schema were written:\n" + "\n".join(violations))


@pytest.fixture(autouse=True)
def _small_journal_reserve(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lot's journal holds a ballast of `journal.reserve_mb` (48 MB) beside it; hundreds of
    test journals would hold GBs of disk. In tests it is at most 1 MiB (the reserve's own tests
    use 1 MiB); a daemon started as a subprocess keeps its configured size."""
    original = Reserve.__init__

    def small(self: Reserve, journal: Path, size: int) -> None:
        original(self, journal, min(size, MB))

    monkeypatch.setattr(Reserve, "__init__", small)


@pytest.fixture(autouse=True)
def _default_logging() -> None:
    """A test that ran the CLI configured structlog for its stderr; start each from defaults."""
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """A connection left open keeps its thread, and the thread keeps pytest from exiting."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0  # a connection may still be closing
    while leaked := [t for t in threading.enumerate()
                     if t not in before and t.is_alive() and not t.daemon]:
        if time.monotonic() > deadline:
            pytest.fail(f"test left threads running: {[t.name for t in leaked]}")
        time.sleep(0.01)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
async def journal(journal_path: Path, clock: FakeClock):  # type: ignore[no-untyped-def]
    j = await Journal.open(JournalConfig(path=journal_path, maintenance_interval_s=3600),
                           clock=clock)
    yield j
    await j.close()
