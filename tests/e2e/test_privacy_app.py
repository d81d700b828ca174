"""A subject-access request and a purge against the whole daemon, over its control socket."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.core.access import EntryDecision
from gateway.runtime.control import ControlClient
from tests.e2e.test_app import running, settings  # noqa: F401 (the fixture)

pytestmark = pytest.mark.slow  # the whole daemon on simulated hardware

PLATE = "PRIV123"


async def test_export_then_purge_a_plate_through_the_running_daemon(
        settings: Settings, tmp_path: Path) -> None:  # noqa: F811
    async with running(settings, tmp_path) as gateway:
        sessions = gateway.sessions
        stay = await sessions.open(EntryDecision(True, "visitor", PLATE), lane_id="entry-north",
                                   at=gateway.clock.stamp(), confidence=0.9)
        await sessions.close(stay, lane_id="exit", at=gateway.clock.stamp(),
                             exit_reason="normal")
        await sessions.open(EntryDecision(True, "visitor", "OTHER99"), lane_id="entry-north",
                            at=gateway.clock.stamp(), confidence=0.9)
        await gateway.journal.mark_acked(range(1, gateway.journal.last_seq + 1))
        client = ControlClient(settings.control.socket_path)
        held = await client.call("privacy.export", {"plate": "priv 123"})
        assert [s["status"] for s in held["sessions"]] == ["closed"]
        assert held["events_total"] == 2  # session.started and session.ended name it
        removed = await client.call("privacy.purge", {"plate": PLATE})
        assert removed["events"] == 2
        assert (await client.call("privacy.export", {"plate": PLATE}))["sessions"] == []
        assert gateway.access.stay_of("OTHER99") is not None  # another car is untouched
    data = b"".join(p.read_bytes() for p in settings.journal.path.parent.glob("journal.db*")
                    if p.is_file())
    assert PLATE.encode() not in data
    con = sqlite3.connect(settings.journal.path)
    audit = con.execute("SELECT action, subject, details FROM audit"
                        " WHERE action = 'privacy.purge'").fetchall()
    con.close()
    assert len(audit) == 1
    assert PLATE not in str(audit)
