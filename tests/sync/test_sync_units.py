"""Sync parts without a broker: pacing, commands, config (the drain: test_drain.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.config import JournalConfig, load_settings
from gateway.core.clock import FakeClock
from gateway.journal import Journal
from gateway.sync.commands import CommandHandler, signed_command
from gateway.sync.inbound import FLOOD_ALARM, ConfigInbox, FloodWatch, InboundQueue
from gateway.sync.mqtt import Message
from gateway.sync.pacing import TokenBucket
from tests.conftest import EXAMPLE
from tests.controllers.lanes import settle
from tests.controllers.test_lane import make_rig
from tests.core.schemas import validate_cloudevent
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
                          window_s=300, max_bytes=4096, replies="p/l/g/replies",
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
    assert elsewhere.payload["outcome"] == "rejected"
    resend = await handler.handle(signed_command(key, cmd(clock, "resend", {"fromSequence": 7})))
    assert resend.payload["result"] == {"fromSequence": 7}
    for beyond in (10**30, "7", 7.0, True):  # past SQLite's integers, or not an integer
        bad = await handler.handle(signed_command(key, cmd(clock, "resend",
                                                           {"fromSequence": beyond})))
        assert bad.payload["outcome"] == "rejected", beyond
    refused = await handler.handle(signed_command(
        key, cmd(clock, "open_gate", {"laneId": "nowhere"})))
    assert refused.payload["outcome"] == "failed"
    assert "nowhere" in refused.payload["reason"]
    bad_args = await handler.handle(signed_command(
        key, cmd(clock, "set_lot_state", {"state": "on_fire"})))
    assert bad_args.payload["outcome"] == "rejected"
    assert "bad args" in bad_args.payload["reason"]
    assert [c[0] for c in lot.calls] == ["status"]


async def test_without_a_key_every_command_is_refused(journal: Journal, clock: FakeClock) -> None:
    lot = FakeLot()
    handler = make_handler(journal, clock, lot, key=None)
    reply = await handler.handle(signed_command(KEY.encode(), cmd(clock, "request_status")))
    assert reply.payload["outcome"] == "rejected"
    assert "disabled" in reply.payload["reason"]
    assert lot.calls == []


@pytest.mark.parametrize("reply_to", [
    "p/l/g/repliesX/evil",  # a plain prefix test let this through
    "p/l/g/replies/a\x00b",  # paho sent it, and the broker dropped the link
    "p/l/g/replies/#",  # paho raised ValueError in a background task: no reply at all
    "p/l/g/replies/+/x",
    "p/l/g/replies//x",
    "p/l/g/replies/\x7f",
])
async def test_a_reply_to_that_is_not_a_topic_under_replies_rejects_the_command(
        journal: Journal, clock: FakeClock, reply_to: str) -> None:
    lot = FakeLot()
    handler = make_handler(journal, clock, lot)
    reply = await handler.handle(signed_command(
        KEY.encode(), cmd(clock, "set_lot_state", {"state": "closed"}, replyTo=reply_to)))
    assert reply.payload["outcome"] == "rejected"
    assert "replyTo" in reply.payload["reason"]
    assert reply.topic is None  # the reply goes to the gateway's own replies topic
    assert lot.calls == []
    (executed,) = [json.loads(r.data_json) for r in await journal.read_outbox(0)]
    assert executed["outcome"] == "rejected"


@pytest.mark.parametrize("issued_at", [
    "2026-03-02T07:59:60Z",  # a leap second: pydantic (and Python's datetime) have none
    "2026-03-02T08:59:60.5+01:00",
    "2026-03-02t07:59:30.123456789z",  # nanoseconds, lower-case t and z
    "2026-03-02T02:59:30-05:00",
])
async def test_a_command_issued_at_any_rfc3339_time_is_taken(
        journal: Journal, clock: FakeClock, issued_at: str) -> None:
    """Issue 18, item 6: the backend may write any RFC 3339 time (the clock: 08:00:00Z)."""
    handler = make_handler(journal, clock)
    reply = await handler.handle(signed_command(
        KEY.encode(), cmd(clock, "request_status", issuedAt=issued_at)))
    assert reply.payload["outcome"] == "accepted", reply.payload


async def test_a_reply_to_under_replies_is_honoured(journal: Journal, clock: FakeClock) -> None:
    handler = make_handler(journal, clock)
    key = KEY.encode()
    for topic in ("p/l/g/replies", "p/l/g/replies/ops-1/req-9"):
        reply = await handler.handle(signed_command(
            key, cmd(clock, "request_status", replyTo=topic)))
        assert (reply.payload["outcome"], reply.topic) == ("accepted", topic)


async def test_only_fresh_commands_signed_with_our_key_pass_the_screen(
        journal: Journal, clock: FakeClock) -> None:
    handler = make_handler(journal, clock)
    key = KEY.encode()
    good = cmd(clock, "request_status")
    raw = signed_command(key, good)
    assert handler.screen(raw) == good["nonce"]
    assert handler.screen(signed_command(b"x" * 40, good)) is None
    assert handler.screen(b"{not json") is None
    assert handler.screen(signed_command(key, {**good, "pad": "x" * 5000})) is None  # too big
    await handler.handle(raw)
    assert handler.screen(raw) is None  # its nonce is spent: a replay is junk
    assert make_handler(journal, clock, key=None).screen(raw) is None


def message(i: int) -> Message:
    return Message("p/l/g/commands", f"junk {i}".encode(), False)


async def test_a_full_queue_drops_junk_and_still_takes_signed_commands_first() -> None:
    queue = InboundQueue(size=3, signed_size=2)
    assert all(queue.put(message(i)) for i in range(3))
    assert not queue.put(message(3))  # the open lane is full: dropped, counted
    signed = Message("p/l/g/commands", b"signed", False)
    assert queue.put(signed, "nonce-1")
    assert not queue.put(signed, "nonce-1")  # a copy goes to the open lane: full, dropped
    assert queue.put(Message("p/l/g/commands", b"signed 2", False), "nonce-2")
    assert not queue.put(Message("p/l/g/commands", b"signed 3", False), "nonce-3")
    assert (queue.dropped, queue.dropped_signed) == (3, 1)
    taken = [(await queue.get()).payload for _ in range(len(queue))]
    assert taken == [b"signed", b"signed 2", b"junk 0", b"junk 1", b"junk 2"]


async def test_drops_are_audited_in_aggregate_under_an_alarm_that_clears_after_the_flood(
        journal: Journal, clock: FakeClock) -> None:
    handler = make_handler(journal, clock)
    queue = InboundQueue(size=1, signed_size=1)
    watch = FloodWatch(queue, journal, handler.report_dropped, interval_s=0.5)
    task = asyncio.create_task(watch.run())
    try:
        for i in range(101):
            queue.put(message(i))  # 100 dropped at once: reported at once
        await wait_for(lambda: journal.active_alarms() != [])
        for i in range(5):
            queue.put(message(i))  # within the interval: reported at its end
        await wait_for(lambda: "alarm.cleared" in journaled_types(journal.path))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    records = await journal.read_outbox(0)
    dropped = [json.loads(r.data_json) for r in records if r.type == "command.executed"]
    assert [(d["outcome"], d["command"], d["details"]["count"]) for d in dropped] == [
        ("dropped", "unparsed", 100), ("dropped", "unparsed", 5)]  # one per interval
    for record in records:
        validate_cloudevent(json.loads(record.to_json("urn:parking:test-lot:gw-1")))
    assert [r.type for r in records].count("alarm.raised") == 1
    assert [r.type for r in records][-1] == "alarm.cleared"
    assert json.loads(records[0].data_json)["alarmId"] == FLOOD_ALARM
    with contextlib.closing(sqlite3.connect(journal.path)) as db:
        audit = db.execute("SELECT action, reason FROM audit").fetchall()
    assert [a[0] for a in audit] == ["command.dropped"] * 2
    assert "100 inbound messages dropped" in audit[0][1]


def journaled_types(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return [r[0] for r in db.execute("SELECT type FROM outbox ORDER BY seq")]


async def wait_for(predicate: Any, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 (the journal has no change notification)
            await asyncio.sleep(0.005)


async def test_a_remote_open_gate_reports_its_command_id_on_gate_opened(
        journal: Journal, clock: FakeClock) -> None:
    """Through a real lane into the journal: every command test used to stop at a FakeLot."""
    settings = load_settings(EXAMPLE, env={})
    rig = make_rig(settings, journal, clock)

    class LaneLot(FakeLot):  # what Gateway.open_gate does: the lane's vend
        async def open_gate(self, lane_id: str, *, reason: str, actor: str) -> None:
            await rig.lane.vend(reason, actor)

    handler = make_handler(journal, clock, LaneLot())
    async with rig.running():
        command = cmd(clock, "open_gate", {"laneId": rig.lane.id, "reason": "stuck ticket"})
        reply = await handler.handle(signed_command(KEY.encode(), command))
        assert reply.payload["outcome"] == "accepted"
        await settle()
        assert rig.barrier.commands == ["raise"]
        await rig.drive_through()
    (opened,) = [r for r in await journal.read_outbox(0) if r.type == "gate.opened"]
    validate_cloudevent(json.loads(opened.to_json("urn:parking:test-lot:gw-1")))
    data = json.loads(opened.data_json)
    assert (data["reason"], data["commandId"]) == ("command", command["commandId"])


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


DEEP = b'{"version": 5, "data": ' + b"[" * 1000 + b"]" * 1000 + b"}"  # 2 KB


@pytest.mark.parametrize(("raw", "version", "error"), [
    (DEEP, 0, "deeper than 32 levels"),  # was a RecursionError, and no report
    (b'{"version": 5, "data": ' + b"[" * 100_000 + b"}", 0, "deeper than 32 levels"),
    (update(2**63, []), 0, "less than or equal to 9007199254740991"),  # was an OverflowError
    (update(2**53, []), 0, "less than or equal to 9007199254740991"),  # was applied
    (update(True, []), 0, "valid integer"),  # was read as 1
    (update("7", []), 0, "valid integer"),  # was taken as 7
    (update(7.0, []), 0, "valid integer"),
])
async def test_an_unbounded_config_document_is_rejected_and_reported(
        journal: Journal, clock: FakeClock, raw: bytes, version: int, error: str) -> None:
    inbox = ConfigInbox(journal, clock)
    assert await inbox.apply("permits", raw, "mqtt") == "rejected"
    (report,) = [json.loads(r.data_json) for r in await journal.read_outbox(0)]
    assert (report["outcome"], report["version"]) == ("rejected", version)
    assert any(error in e for e in report["errors"]), report["errors"]
    assert await inbox.current("permits") is None


async def test_the_largest_exact_json_version_applies(journal: Journal, clock: FakeClock) -> None:
    inbox = ConfigInbox(journal, clock)
    nested = [{"permitId": "P-1", "plates": ["AB123"]}]
    assert await inbox.apply("permits", update(2**53 - 1, nested), "mqtt") == "applied"
    assert await inbox.apply("permits", json.dumps({"version": 2**53 - 1, "data": nested},
                                                   indent=40).encode(), "mqtt") == "ignored"


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


async def test_privacy_commands_reach_the_lot_signed(journal: Journal, clock: FakeClock) -> None:
    lot = FakeLot()
    handler = make_handler(journal, clock, lot)
    key = KEY.encode()
    purge = await handler.handle(signed_command(key, cmd(clock, "privacy_purge",
                                                         {"plate": "AB123"})))
    assert purge.payload["result"] == {"sessions": 1}
    export = await handler.handle(signed_command(key, cmd(clock, "privacy_export",
                                                          {"plate": "AB123"})))
    assert export.payload["result"] == {"plate": "AB123", "sessions": []}
    assert lot.calls[0][:2] == ("purge_plate", "AB123")
    assert lot.calls[0][2].startswith("backend:")
