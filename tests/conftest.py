"""Shared fixtures. Every event any test writes into a journal is checked against its schema."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.config import JournalConfig
from gateway.events import envelope_json, source_uri
from gateway.journal import Journal
from tests.schemas import validate_cloudevent

SOURCE = source_uri("test-lot", "gw-1")


@pytest.fixture(autouse=True)
def _validate_journaled_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wrap the journal's one write path: no event reaches the outbox unvalidated."""
    original = Journal._apply

    async def checked(self: Journal, batch: Sequence[object]) -> list[list[int]]:
        for write in batch:
            for ev in write.events:  # type: ignore[attr-defined]
                validate_cloudevent(json.loads(envelope_json(
                    source=SOURCE, sequence=1, id=ev.id, type=ev.type.value, time=ev.time,
                    data_json=ev.data_json)))
        return await original(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(Journal, "_apply", checked)


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
