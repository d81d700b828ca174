"""Fuzzing the command parser: whatever arrives on the commands topic, signed or not, the
handler answers with a reply (accepted, rejected or failed) and an audit, never an exception;
the lot is called only with arguments that passed their model."""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import JournalConfig
from gateway.core.clock import FakeClock
from gateway.journal import Journal
from gateway.sync.commands import COMMANDS, CommandHandler, signed_command
from tests.fuzz import FUZZ
from tests.sync.sync_child import KEY, FakeLot

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=3),
    max_leaves=12)
ARG_NAMES = st.sampled_from(["laneId", "reason", "state", "mode", "fromSequence", "x", ""])
NAMES = st.sampled_from([*sorted(COMMANDS), "rm_rf", "", "OPEN_GATE"])


class _Rig:
    def __init__(self, loop: asyncio.AbstractEventLoop, journal: Journal) -> None:
        self.loop, self.journal = loop, journal
        self.lot = FakeLot()
        clock = FakeClock()
        self.clock = clock

        async def resend(first: int) -> dict[str, Any]:
            return {"fromSequence": first}

        async def status() -> dict[str, Any]:
            return {"backlog": 0}

        self.handler = CommandHandler(
            key=KEY.encode(), journal=journal, clock=clock, control=self.lot, window_s=300,
            max_bytes=4096, replies="p/l/g/replies", resend=resend, sync_status=status)

    def handle(self, raw: bytes) -> dict[str, Any]:
        reply = self.loop.run_until_complete(self.handler.handle(raw))
        assert reply.payload["outcome"] in ("accepted", "rejected", "failed")
        return reply.payload


@pytest.fixture(scope="module")
def rig() -> Iterator[_Rig]:
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        journal = loop.run_until_complete(Journal.open(
            JournalConfig(path=Path(tmp) / "journal.db", maintenance_interval_s=3600,
                          reserve_mb=0), clock=FakeClock()))
        try:
            yield _Rig(loop, journal)
        finally:
            loop.run_until_complete(journal.close())
            loop.close()


@FUZZ
@given(st.binary(max_size=600) | JSON.map(lambda v: json.dumps(v).encode()))
def test_anything_unsigned_is_rejected_and_audited(rig: _Rig, raw: bytes) -> None:
    calls = len(rig.lot.calls)
    assert rig.handle(raw)["outcome"] == "rejected"
    assert len(rig.lot.calls) == calls


@FUZZ
@given(name=NAMES, args=st.dictionaries(ARG_NAMES, JSON, max_size=3),
       reply_to=st.none() | st.text(max_size=30), issued=st.datetimes(timezones=st.just(UTC)))
def test_any_signed_command_gets_an_answer_and_the_lot_only_valid_arguments(
        rig: _Rig, name: str, args: dict[str, Any], reply_to: str | None,
        issued: datetime) -> None:
    body: dict[str, Any] = {"commandId": f"c-{uuid.uuid4().hex[:8]}", "command": name,
                            "args": args, "issuedAt": rig.clock.now().isoformat(),
                            "nonce": uuid.uuid4().hex}
    if reply_to is not None:
        body["replyTo"] = reply_to
    calls = len(rig.lot.calls)
    payload = rig.handle(signed_command(KEY.encode(), body))
    # Answered under its own id, or rejected whole (a field its model refuses: no id to trust).
    assert payload["commandId"] == body["commandId"] or payload["outcome"] == "rejected"
    for call in rig.lot.calls[calls:]:
        if call[0] == "set_lot_state":
            assert call[1] in ("open", "full", "closed")
        if call[0] == "set_lane_mode":
            assert call[2] in ("auto", "locked_open", "locked_closed")
    # Any time at all, outside the window: rejected.
    if abs((issued - rig.clock.now()).total_seconds()) > 600:
        late = {**body, "nonce": uuid.uuid4().hex, "issuedAt": issued.isoformat()}
        assert rig.handle(signed_command(KEY.encode(), late))["outcome"] == "rejected"
