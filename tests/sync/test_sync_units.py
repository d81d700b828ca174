"""Sync parts without a broker: pacing, commands, config (the drain: test_drain.py)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.config import JournalConfig
from gateway.core.clock import FakeClock
from gateway.journal import Journal
from gateway.sync.commands import CommandHandler, signed_command
from gateway.sync.inbound import ConfigInbox
from gateway.sync.pacing import TokenBucket
from tests.sync.sync_child import KEY, FakeLot, bay_event


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = FakeTime()
    bucket = TokenBucket(rate=10, burst=5, now=now)
    assert bucket.take(8) == 5  # the burst
    assert bucket.delay(1) == pytest.approx(0.1)
    now.t += 0.35
    assert bucket.take(10) == 3
    now.t += 100
    assert bucket.take(100) == 5  # never more than the burst, however long it waited


# --- commands ----------------------------------------------------------------------------


def make_handler(journal: Journal, clock: FakeClock, lot: FakeLot | None = None,
                 key: bytes | None = KEY.encode()) -> CommandHandler:
    async def resend(first: int) -> dict[str, Any]:
        return {"fromSequence": first}

    async def status() -> dict[str, Any]:
        return {"backlog": 0}

    return CommandHandler(key=key, journal=journal, clock=clock, control=lot or FakeLot(),
                          window_s=300, max_bytes=4096, reply_prefix="p/l/g/replies",
                          resend=resend, sync_status=status)


def cmd(clock: FakeClock, name: str, args: dict[str, Any] | None = None,
        **extra: Any) -> dict[str, Any]:
    return {"commandId": f"c-{uuid.uuid4().hex[:6]}", "command": name, "args": args or {},
            "issuedAt": clock.now().isoformat(), "nonce": uuid.uuid4().hex, **extra}


async def test_a_nonce_stays_used_across_a_restart(journal_path: Path, clock: FakeClock) -> None:
    raw = signed_command(KEY.encode(), cmd(clock, "set_lot_state", {"state": "full"}))
    lot = FakeLot()
    async with await Journal.open(JournalConfig(path=journal_path), clock=clock) as journal:
        handler = make_handler(journal, clock, lot)
        await handler.load()
        assert (await handler.handle(raw)).payload["outcome"] == "accepted"
    clock.advance(60)
    async with await Journal.open(JournalConfig(path=journal_path), clock=clock) as journal:
        handler = make_handler(journal, clock, lot)
        await handler.load()
        reply = await handler.handle(raw)
    assert reply.payload["outcome"] == "rejected"
    assert "replay" in reply.payload["reason"]
    assert len([c for c in lot.calls if c[0] == "set_lot_state"]) == 1


async def test_commands_run_against_the_lot_and_report_refusals(
        journal: Journal, clock: FakeClock) -> None:
    lot = FakeLot()
    handler = make_handler(journal, clock, lot)
    key = KEY.encode()
    status = await handler.handle(signed_command(
        key, cmd(clock, "request_status", replyTo="p/l/g/replies/ops-1")))
    assert status.topic == "p/l/g/replies/ops-1"
    assert status.payload["result"] == {"lot": {"lotState": "open", "lanes": {"entry-1": "auto"}},
                                        "sync": {"backlog": 0}}
    elsewhere = await handler.handle(signed_command(
        key, cmd(clock, "set_lane_mode", {"laneId": "exit-1", "mode": "locked_open"},
                 replyTo="some/other/topic")))
    assert elsewhere.topic is None  # replies never go outside the gateway's reply topic
    resend = await handler.handle(signed_command(key, cmd(clock, "resend", {"fromSequence": 7})))
    assert resend.payload["result"] == {"fromSequence": 7}
    refused = await handler.handle(signed_command(
        key, cmd(clock, "open_gate", {"laneId": "nowhere"})))
    assert refused.payload["outcome"] == "failed"
    assert "nowhere" in refused.payload["reason"]
    bad_args = await handler.handle(signed_command(
        key, cmd(clock, "set_lot_state", {"state": "on_fire"})))
    assert bad_args.payload["outcome"] == "rejected"
    assert "bad args" in bad_args.payload["reason"]
    assert [c[0] for c in lot.calls] == ["status", "set_lane_mode"]


async def test_without_a_key_every_command_is_refused(journal: Journal, clock: FakeClock) -> None:
    lot = FakeLot()
    handler = make_handler(journal, clock, lot, key=None)
    reply = await handler.handle(signed_command(KEY.encode(), cmd(clock, "request_status")))
    assert reply.payload["outcome"] == "rejected"
    assert "disabled" in reply.payload["reason"]
    assert lot.calls == []


# --- inbound config ----------------------------------------------------------------------


def update(version: Any, data: Any) -> bytes:
    return json.dumps({"version": version, "data": data}).encode()


async def test_config_updates_are_versioned_and_validated(journal: Journal,
                                                          clock: FakeClock) -> None:
    inbox = ConfigInbox(journal, clock)
    reservation = {"reservationId": "R-1", "plate": "AB123", "start": "2026-03-02T09:00:00Z",
                   "end": "2026-03-02T11:00:00Z"}
    assert await inbox.apply("reservations", update(2, [reservation]), "mqtt") == "applied"
    assert await inbox.apply("reservations", update(2, [reservation]), "mqtt") == "ignored"
    assert await inbox.apply("reservations", update(1, []), "http") == "ignored"  # older
    backwards = {**reservation, "end": "2026-03-02T08:00:00Z"}
    assert await inbox.apply("reservations", update(3, [backwards]), "mqtt") == "rejected"
    assert await inbox.apply("reservations", b"\xff not json", "mqtt") == "rejected"
    assert await inbox.apply("reservations", update(-1, []), "mqtt") == "rejected"
    assert await inbox.apply("nonsense", update(1, []), "mqtt") == "ignored"
    assert await inbox.apply("permits", update(1, [{"permitId": "P", "plates": []}]),
                             "mqtt") == "rejected"
    current = await inbox.current("reservations")
    assert current is not None
    assert current[0] == 2
    assert current[1][0].plate == "AB123"
    assert (inbox.applied, inbox.rejected) == (1, 4)
    reports = [r for r in await journal.read_outbox(0) if r.type == "config.applied"]
    data = [json.loads(r.data_json) for r in reports]
    assert [(d["version"], d["outcome"]) for d in data] == [
        (2, "applied"), (3, "rejected"), (0, "rejected"), (0, "rejected"), (1, "rejected")]
    assert any("end must be after start" in e for e in data[1]["errors"])


def test_the_asyncapi_document_names_every_event_schema() -> None:
    yaml = pytest.importorskip("yaml")
    docs = Path(__file__).resolve().parents[2] / "docs"
    spec = yaml.safe_load((docs / "asyncapi.yaml").read_text())
    assert spec["asyncapi"].startswith("3.")
    refs = {m["payload"]["schema"]["$ref"] for m in spec["components"]["messages"].values()
            if isinstance(m.get("payload"), dict) and "schema" in m["payload"]
            and "$ref" in m["payload"]["schema"]}
    for ref in refs:
        assert (docs / ref).is_file(), ref
    from tests.core.schemas import event_type_names
    assert {f"./schemas/{name}.json" for name in event_type_names()} <= refs


async def test_unreadable_tls_files_stop_sync_with_a_clear_error(
        journal: Journal, clock: FakeClock, tmp_path: Path) -> None:
    from gateway.sync import Sync, SyncConfigError
    from tests.sync.sync_child import sync_settings

    settings = sync_settings(1883, mqtt={"tls": {"ca_file": str(tmp_path / "missing-ca.pem")}})
    sync = Sync(settings, journal, clock, FakeLot())
    with pytest.raises(SyncConfigError, match=r"missing-ca\.pem"):
        await sync.run()


async def test_stats_show_the_backlog_while_offline(journal: Journal, clock: FakeClock) -> None:
    from gateway.sync import Sync
    from tests.sync.sync_child import sync_settings

    sync = Sync(sync_settings(1), journal, clock, FakeLot())
    await journal.commit((), [bay_event(clock, i) for i in range(7)])
    clock.advance(90)
    stats = await sync.stats()
    assert (stats.backlog, stats.acked_through, stats.last_seq) == (7, 0, 7)
    assert stats.lag_s == pytest.approx(90, abs=0.01)
    assert not stats.connected
    with pytest.raises(ValueError, match="bad state name"):
        sync.publish_state("a/b", {})
