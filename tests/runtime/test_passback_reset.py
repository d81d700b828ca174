"""The anti-passback reset of one credential: the CLI over the control socket, the signed remote
command, and the daemon's own (audited, kept across a restart, honoured by the next entry)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from gateway.core.access import EntryDecision
from gateway.core.clock import FakeClock
from gateway.core.operations import OperationRefused
from gateway.journal import Journal
from gateway.sync.commands import signed_command
from tests.runtime.test_control import ME, _run, daemon
from tests.sync.sync_child import FakeLot as SyncLot
from tests.sync.test_sync_units import KEY, cmd, make_handler
from tests.web.test_daemon import running, settings_for

__all__ = ["daemon"]  # the control server fixture, used by name


def test_cli_passback_reset_asks_the_daemon(daemon):  # type: ignore[no-untyped-def]
    path, lot, _ = daemon
    done = _run("passback", "reset", "AB123CD", "--socket", str(path))
    assert done.exit_code == 0, done.output
    assert "session s-1" in done.output
    assert lot.calls == [("reset_passback", "AB123CD", ME)]
    as_json = _run("passback", "reset", "AB123CD", "--socket", str(path), "--json")
    assert json.loads(as_json.output)["sessionId"] == "s-1"
    refused = _run("passback", "reset", "ZZ999", "--socket", str(path))
    assert refused.exit_code == 1
    assert "not inside" in refused.stderr


async def test_the_signed_command_resets_through_the_lot(journal: Journal,
                                                         clock: FakeClock) -> None:
    lot = SyncLot()
    handler = make_handler(journal, clock, lot)
    reply = await handler.handle(signed_command(KEY.encode(), cmd(
        clock, "reset_passback", {"plate": "AB123CD"})))
    assert reply.payload["outcome"] == "accepted"
    assert reply.payload["result"] == {"sessionId": "s-1"}
    ((name, plate, actor),) = lot.calls
    assert (name, plate) == ("reset_passback", "AB123CD")
    assert actor == f"backend:{reply.payload['commandId']}"
    bad = await handler.handle(signed_command(KEY.encode(), cmd(clock, "reset_passback", {})))
    assert bad.payload["outcome"] == "rejected"


async def test_the_daemon_audits_keeps_and_honours_a_reset(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, PARKING_GATEWAY__LOT__ANTI_PASSBACK="hard")
    async with running(settings) as gateway:
        stay = await gateway.sessions.open(
            EntryDecision(True, "visitor", "AB123CD"), lane_id=settings.lanes[0].id,
            at=gateway.clock.stamp(), confidence=0.9)
        now = gateway.clock.now()
        assert gateway.access.entry("AB123CD", at=now, free_bays=50).reason == "anti_passback"
        with pytest.raises(OperationRefused, match="not inside"):
            await gateway.reset_passback("ZZ999ZZ", actor="cli:test")
        cleared = await gateway.reset_passback("ab 123 cd", actor="cli:test")
        assert cleared["sessionId"] == stay.session_id
    with sqlite3.connect(settings.journal.path) as db:
        audit = db.execute("SELECT actor, action, subject, details FROM audit"
                           " WHERE action = 'passback.reset'").fetchall()
    assert audit == [("cli:test", "passback.reset", stay.session_id,
                      json.dumps({"sessionId": stay.session_id}, separators=(",", ":")))]
    assert "AB123CD" not in repr(audit)  # the session, not the plate
    # Restarted: the reset stands, and the next entry replaces the stale session.
    async with running(settings) as again:
        assert again.access.passback_resets == {stay.session_id}
        decision = again.access.entry("AB123CD", at=again.clock.now(), free_bays=50)
        assert (decision.allow, decision.passback) == (True, "replaced")
        assert decision.existing is not None
        assert decision.existing.session_id == stay.session_id
