"""Sync against a real mosquitto: delivery, outages, crashes, commands, TLS, inbound config.

Each test starts its own broker on a free 127.0.0.1 port (tests/mosquitto.py) and the
backend simulator (hardware-sim/parking_sim/backend.py) as the receiving side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import trustme
from parking_sim.backend import BackendSim, Received

from gateway.config import HttpConfig
from gateway.core.clock import FakeClock
from gateway.core.events import source_uri
from gateway.journal import Journal
from gateway.sync import Sync
from gateway.sync.commands import signed_command
from gateway.sync.http import HttpBackend
from gateway.sync.inbound import FLOOD_ALARM
from gateway.sync.mqtt import EventClient, tls_context
from gateway.sync.service import INBOX_SIZE
from tests.sync import mosquitto
from tests.sync.mosquitto import BrokerTls, Mosquitto, free_port
from tests.sync.sync_child import GATEWAY, KEY, LOT, FakeLot, bay_event, sync_settings

pytestmark = pytest.mark.slow  # a real mosquitto, outages and SIGKILLs of a drain (about 30 s)

SOURCE = source_uri(LOT, GATEWAY)
broker = mosquitto.broker  # the fixture: a fresh mosquitto per test
ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def running(sync: Sync) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(sync.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until(predicate: Any, within: float = 20.0, step: float = 0.01) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 (the journal has no change notification)
            await asyncio.sleep(step)


def assert_in_order_without_gaps(backend: BackendSim, total: int) -> None:
    assert backend.sequences(SOURCE) == list(range(1, total + 1))
    assert backend.gaps(SOURCE) == []


async def test_every_event_arrives_once_in_order(broker: Mosquitto, journal: Journal,
                                                 clock: FakeClock) -> None:
    for start in range(0, 1500, 500):
        await journal.commit((), [bay_event(clock, i) for i in range(start, start + 500)])
    async with BackendSim(mqtt_port=broker.port) as backend:
        await backend.ready.wait()
        sync = Sync(sync_settings(broker.port), journal, clock, FakeLot())
        sync.publish_state("occupancy", {"free": 10, "occupied": 2})
        async with running(sync):
            for i in range(500):  # live events while the backlog drains
                await journal.commit((), [bay_event(clock, i)])
            await backend.wait_for(SOURCE, 2000)
            await wait_until(lambda: journal.acked_through == 2000)
            stats = await sync.stats()
            await wait_until(lambda: backend.presence.get(f"{LOT}/{GATEWAY}") == "online")
        await wait_until(lambda: backend.presence[f"{LOT}/{GATEWAY}"] == "offline")  # goodbye
        arrivals = backend.received[SOURCE].arrivals
    assert arrivals == sorted(arrivals)  # in order, no duplicate
    assert len(arrivals) == 2000
    assert_in_order_without_gaps(backend, 2000)
    assert stats.backlog == 0
    assert stats.acked >= 2000
    assert stats.connected
    assert backend.state[f"{LOT}/{GATEWAY}/occupancy"] == {"free": 10, "occupied": 2}
    first = backend.events(SOURCE)[0]
    assert first["source"] == SOURCE
    assert first["seq"] == 1


async def test_a_broker_outage_under_load_loses_nothing_and_never_stalls_the_lanes(
        broker: Mosquitto, journal: Journal, clock: FakeClock) -> None:
    backlog, live, outage_s = 10_000, 600, 1.5
    latencies: list[tuple[int, float]] = []
    for start in range(0, backlog, 1000):
        await journal.commit((), [bay_event(clock, i) for i in range(start, start + 1000)])
    async with BackendSim(mqtt_port=broker.port) as backend:
        await backend.ready.wait()
        # A small window and small messages: the broker goes down mid-drain.
        sync = Sync(sync_settings(broker.port, inflight_window=16, events_per_message=10),
                    journal, clock, FakeLot())
        async with running(sync):

            async def lane() -> None:
                for i in range(live):
                    t = time.perf_counter()
                    (seq,) = await journal.commit((), [bay_event(clock, i)])
                    latencies.append((seq, time.perf_counter() - t))
                    await asyncio.sleep(0.001)

            await wait_until(lambda: journal.acked_through >= 2000)
            producer = asyncio.create_task(lane())
            broker.stop()
            stopped_at = (journal.acked_through, journal.last_seq)
            await asyncio.sleep(outage_s)
            sync.publish_state("health", {"ok": True})  # set while down: sent on reconnect
            restarted_at = journal.last_seq
            broker.start()
            await producer
            total = backlog + live
            await backend.wait_for(SOURCE, total, within=90)
            await wait_until(lambda: journal.acked_through == total)
            await wait_until(lambda: f"{LOT}/{GATEWAY}/health" in backend.state)
            stats = await sync.stats()
        arrivals = backend.received[SOURCE].arrivals
    first_seen = list(dict.fromkeys(arrivals))
    assert first_seen == sorted(first_seen)  # in order once duplicates are dropped
    assert_in_order_without_gaps(backend, total)
    assert stopped_at[0] < backlog  # it was still draining the backlog when the broker stopped
    assert restarted_at - stopped_at[1] > 100  # the lane kept committing meanwhile
    during = [dt for seq, dt in latencies if stopped_at[1] < seq <= restarted_at]
    assert max(during) < 0.5, f"a journal write waited {max(during):.3f} s during the outage"
    assert stats.reconnects >= 1
    print(f"outage: {total} events ({backlog} backlog, {live} live),"
          f" {restarted_at - stopped_at[1]} committed during a {outage_s} s outage,"
          f" {backend.received[SOURCE].duplicates} duplicates dropped by the backend,"
          f" max commit latency during the outage {max(during) * 1000:.1f} ms")


async def _landed(arrivals: list[int], quiet_s: float = 0.3, within: float = 15.0) -> None:
    """Wait until the backend has taken what was on the wire: no arrival for `quiet_s`. A
    fixed wait (0.2 s) was too short on a slow machine (the arm64 run, emulated): a copy sent
    before a kill then landed after the next kill's snapshot and was blamed on that run."""
    deadline = asyncio.get_running_loop().time() + within
    count = -1
    while count != len(arrivals) and asyncio.get_running_loop().time() < deadline:
        count = len(arrivals)
        await asyncio.sleep(quiet_s)


def _cursor(path: Path) -> tuple[int, int]:
    """(acked_through, last committed seq) of a journal no process holds."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT (SELECT value FROM meta WHERE key = 'acked_through'),"
                          " (SELECT coalesce(max(seq), 0) FROM outbox)").fetchone()
    finally:
        con.close()
    return int(row[0]), int(row[1])


async def _start_child(journal_path: Path, port: int, total: int,
                       log: Path) -> asyncio.subprocess.Process:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.sync.sync_child", str(journal_path), str(port), str(total),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=log.open("ab"),
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'hardware-sim'}"})
    assert child.stdout is not None
    async with asyncio.timeout(30):
        while (line := await child.stdout.readline()) != b"ready\n":
            assert line, f"the child gateway died: {log.read_text()[-2000:]}"
    asyncio.get_running_loop().create_task(_drain_pipe(child.stdout))
    return child


async def _drain_pipe(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def test_sigkill_mid_drain_20_times_loses_nothing_and_repeats_only_unacked(
        broker: Mosquitto, tmp_path: Path) -> None:
    rng = random.Random(20260302)
    total, kills = 12_000, 20
    journal_path, log = tmp_path / "journal.db", tmp_path / "child.log"
    async with BackendSim(mqtt_port=broker.port) as backend:
        await backend.ready.wait()
        arrivals = backend.received.setdefault(SOURCE, Received()).arrivals
        windows: list[tuple[int, int, int]] = []  # (arrival index, acked_through, last seq)
        for _ in range(kills):
            child = await _start_child(journal_path, broker.port, total, log)
            await asyncio.sleep(rng.uniform(0.05, 0.6))
            child.send_signal(signal.SIGKILL)
            await child.wait()
            await _landed(arrivals)  # what was on the wire lands
            windows.append((len(arrivals), *_cursor(journal_path)))
        child = await _start_child(journal_path, broker.port, total, log)
        try:
            await backend.wait_for(SOURCE, total, within=90)
            assert backend.presence[f"{LOT}/{GATEWAY}"] == "online"
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        # The broker publishes the last will as soon as the dead gateway's socket closes.
        await wait_until(lambda: backend.presence[f"{LOT}/{GATEWAY}"] == "offline", within=10)
    assert_in_order_without_gaps(backend, total)
    # Arrivals after kill k may repeat only what was unacked then: acked_k < seq <= last_k.
    # (The broker's PUBACK can come before its delivery to the backend, so the backend's
    # own view at the kill says nothing of what was acked.)
    segments = [(0, 0, 0), *windows]  # the first run follows no kill: nothing may repeat
    seen: set[int] = set()
    duplicates = widest = 0
    for k, (start, acked, sent) in enumerate(segments):
        end = segments[k + 1][0] if k + 1 < len(segments) else len(arrivals)
        for seq in arrivals[start:end]:
            if seq in seen:
                duplicates += 1
                assert acked < seq <= sent, (
                    f"event {seq} came again after kill {k}, but it was acked ({acked})"
                    f" or not yet committed ({sent}) then")
                widest = max(widest, seq - acked)
            seen.add(seq)
    print(f"crash: {kills} SIGKILLs, {total} events, {duplicates} duplicates,"
          f" each within the unacked window at its kill (at most {widest} past acked_through)")


def command(clock: FakeClock, name: str, args: dict[str, Any] | None = None,
            **overrides: Any) -> dict[str, Any]:
    body = {"commandId": f"cmd-{uuid.uuid4().hex[:8]}", "command": name, "args": args or {},
            "issuedAt": clock.now().isoformat(), "nonce": uuid.uuid4().hex,
            "issuedBy": "operator-7"}
    return {**body, **overrides}


def journaled(path: Path, type_: str) -> list[dict[str, Any]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT data FROM outbox WHERE type = ? ORDER BY seq", (type_,))
        return [json.loads(r[0]) for r in rows]
    finally:
        con.close()


def audited(path: Path) -> list[tuple[str, str, str | None]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(con.execute("SELECT actor, action, subject FROM audit ORDER BY id"))
    finally:
        con.close()


async def test_bad_commands_are_rejected_and_audited_and_never_executed(
        broker: Mosquitto, journal: Journal, clock: FakeClock, journal_path: Path) -> None:
    lot = FakeLot()
    key = KEY.encode()
    topic = f"parking/v1/{LOT}/{GATEWAY}/commands"
    async with BackendSim(mqtt_port=broker.port) as backend:
        await backend.ready.wait()
        sync = Sync(sync_settings(broker.port, max_command_bytes=1024), journal, clock, lot)
        async with running(sync):
            await sync.connected_event.wait()
            good = command(clock, "open_gate", {"laneId": "entry-1", "reason": "stuck ticket"})
            good_bytes = signed_command(key, good)
            await backend.push_raw(topic, good_bytes)
            assert (await backend.wait_reply(good["commandId"]))["outcome"] == "accepted"
            bad_sig = command(clock, "set_lot_state", {"state": "closed"})
            stale = command(clock, "set_lot_state", {"state": "closed"},
                            issuedAt=(clock.now().replace(hour=6)).isoformat())
            unknown = command(clock, "self_destruct")
            cases = [
                b"{not json",
                signed_command(b"x" * 40, bad_sig),
                signed_command(key, stale),
                good_bytes,  # the same nonce again: a replay
                signed_command(key, unknown),
                signed_command(key, command(clock, "set_lot_state",
                                            {"state": "closed", "pad": "x" * 2000})),
            ]
            for n, raw in enumerate(cases, start=2):  # one by one: signed ones would go ahead
                await backend.push_raw(topic, raw)
                await wait_until(
                    lambda n=n: len(journaled(journal_path, "command.executed")) == n)
            replied = await backend.wait_reply(unknown["commandId"])
    outcomes = journaled(journal_path, "command.executed")
    assert [o["outcome"] for o in outcomes] == ["accepted"] + ["rejected"] * 6
    reasons = [o.get("reason", "") for o in outcomes[1:]]
    assert "not a signed command" in reasons[0]
    assert reasons[1] == "bad signature"
    assert "outside the 300 s window" in reasons[2]
    assert "replay" in reasons[3]
    assert "unknown command 'self_destruct'" in reasons[4]
    assert "byte limit" in reasons[5]
    assert outcomes[1]["command"] == "unparsed"
    assert outcomes[2]["command"] == "unparsed"
    assert outcomes[5]["command"] == "self_destruct"
    assert outcomes[5]["issuedBy"] == "operator-7"
    assert replied["outcome"] == "rejected"
    # Executed once, as the backend, and nothing else reached the lot.
    assert lot.calls == [("open_gate", "entry-1", "stuck ticket", f"backend:{good['commandId']}")]
    actions = [a[1] for a in audited(journal_path)]
    assert actions.count("command.open_gate") == 2  # accepted, then its replay rejected
    assert len(actions) == 7


class HeldLot(FakeLot):
    """A lot whose `status` waits for `release`: the command handler is busy meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def status(self) -> dict[str, Any]:
        self.calls.append(("status",))
        await self.release.wait()
        return {"lotState": "open"}


async def test_a_flood_of_junk_cannot_drown_a_signed_command(
        broker: Mosquitto, journal: Journal, clock: FakeClock, journal_path: Path) -> None:
    lot = HeldLot()
    key = KEY.encode()
    topic = f"parking/v1/{LOT}/{GATEWAY}/commands"

    def executed() -> list[dict[str, Any]]:
        return journaled(journal_path, "command.executed")

    busy, good = command(clock, "request_status"), command(clock, "set_lot_state",
                                                           {"state": "full"})
    async with BackendSim(mqtt_port=broker.port) as backend:
        await backend.ready.wait()
        sync = Sync(sync_settings(broker.port), journal, clock, lot)
        async with (running(sync),
                    EventClient("127.0.0.1", broker.port, client_id="attacker",
                                will_topic="attacker/gone") as attacker):
            await sync.connected_event.wait()
            await backend.push_raw(topic, signed_command(key, busy))
            await wait_until(lambda: lot.calls == [("status",)])  # the handler is busy
            # 400 garbage messages back-to-back, then a valid signed command.
            sent = [attacker.publish_nowait(topic, b"garbage %d" % i) for i in range(400)]
            sent.append(attacker.publish_nowait(topic, signed_command(key, good)))
            await asyncio.gather(*sent)
            await wait_until(lambda: sync.inbound.dropped + len(sync.inbound) == 401)
            await wait_until(lambda: FLOOD_ALARM in {a.alarm_id for a in journal.active_alarms()})
            lot.release.set()
            reply = await backend.wait_reply(good["commandId"])
            await wait_until(lambda: sum(e["details"].get("count", 1) for e in executed()) == 402)
            stats = await sync.stats()
    assert reply["outcome"] == "accepted"
    assert lot.calls == [("status",), ("set_lot_state", "full", f"backend:{good['commandId']}")]
    outcomes = [e for e in executed() if e["outcome"] != "dropped"]
    # The signed command went ahead of the garbage that was queued before it.
    assert [e["commandId"] for e in outcomes[:2]] == [busy["commandId"], good["commandId"]]
    assert [e["outcome"] for e in outcomes[2:]] == ["rejected"] * INBOX_SIZE
    # The rest was counted, and audited in aggregate: an event per report, not per message.
    dropped = [e for e in executed() if e["outcome"] == "dropped"]
    assert sum(e["details"]["count"] for e in dropped) == 400 - INBOX_SIZE == stats.inbound_dropped
    assert len(dropped) <= 2
    assert len(audited(journal_path)) == 2 + INBOX_SIZE + len(dropped)


async def test_messages_not_handled_when_the_link_drops_are_handled_after_the_reconnect(
        broker: Mosquitto, journal: Journal, clock: FakeClock, journal_path: Path) -> None:
    lot = HeldLot()
    key = KEY.encode()
    busy = command(clock, "request_status")
    waiting = [command(clock, "set_lot_state", {"state": s}) for s in ("full", "open")]
    async with BackendSim(mqtt_port=broker.port) as backend:
        await backend.ready.wait()
        sync = Sync(sync_settings(broker.port), journal, clock, lot)
        async with running(sync):
            await sync.connected_event.wait()
            await backend.send_command(LOT, GATEWAY, key, busy)
            await wait_until(lambda: lot.calls == [("status",)])
            for c in waiting:
                await backend.send_command(LOT, GATEWAY, key, c)
            await wait_until(lambda: len(sync.inbound) == 2)  # arrived, not yet handled
            broker.stop()
            await asyncio.sleep(0.5)  # the link is down while the command in hand still runs
            lot.release.set()
            broker.start()
            await wait_until(lambda: len(journaled(journal_path, "command.executed")) == 3)
            await backend.wait_reply(waiting[1]["commandId"])  # over the new link
    executed = journaled(journal_path, "command.executed")
    assert [(e["commandId"], e["outcome"]) for e in executed] == [
        (c["commandId"], "accepted") for c in (busy, *waiting)]
    assert [c[0] for c in lot.calls] == ["status", "set_lot_state", "set_lot_state"]


async def test_tls_with_a_client_certificate_and_a_password(
        tmp_path: Path, journal: Journal, clock: FakeClock,
        capsys: pytest.CaptureFixture[str]) -> None:
    ca = trustme.CA()
    server, client = ca.issue_cert("127.0.0.1"), ca.issue_cert("gw-1.test-lot.example")
    files = {name: tmp_path / f"{name}.pem" for name in
             ("ca", "server", "server-key", "client", "client-key")}
    ca.cert_pem.write_to_path(files["ca"])
    server.cert_chain_pems[0].write_to_path(files["server"])
    server.private_key_pem.write_to_path(files["server-key"])
    client.cert_chain_pems[0].write_to_path(files["client"])
    client.private_key_pem.write_to_path(files["client-key"])
    password = "tls-broker-password-never-logged"
    tls = BrokerTls(files["ca"], files["server"], files["server-key"])
    with Mosquitto(tmp_path / "broker", tls=tls,
                   passwords={"gw-1": password, "backend": "backend-pw"}) as broker:
        settings = sync_settings(broker.port, mqtt={
            "username": "gw-1", "password": password,
            "tls": {"ca_file": str(files["ca"]), "cert_file": str(files["client"]),
                    "key_file": str(files["client-key"])}})
        assert settings.sync.mqtt.tls is not None
        await journal.commit((), [bay_event(clock, i) for i in range(50)])
        context = tls_context(settings.sync.mqtt.tls)
        async with aiomqtt.Client("127.0.0.1", broker.port, username="backend",
                                  password="backend-pw", tls_context=context,
                                  identifier="tls-backend") as sub:
            await sub.subscribe(f"parking/v1/{LOT}/{GATEWAY}/events", qos=1)
            got: list[int] = []

            async def listen() -> None:
                async for message in sub.messages:
                    assert isinstance(message.payload, bytes)
                    body = json.loads(message.payload)  # the backlog comes as one batch
                    got.extend(e["seq"] for e in (body if isinstance(body, list) else [body]))
                    if len(got) == 50:
                        return

            sync = Sync(settings, journal, clock, FakeLot())
            async with running(sync):
                await asyncio.wait_for(listen(), 20)
                await wait_until(lambda: journal.acked_through == 50)
            assert got == list(range(1, 51))

        # Without a client certificate the broker refuses the gateway: nothing is acked.
        no_cert = sync_settings(broker.port, mqtt={
            "username": "gw-1", "password": password, "tls": {"ca_file": str(files["ca"])}})
        await journal.commit((), [bay_event(clock, 99)])
        refused = Sync(no_cert, journal, clock, FakeLot())
        async with running(refused):
            await wait_until(lambda: refused._last_error is not None, within=15)
            assert not refused.connected_event.is_set()
        assert journal.acked_through == 50
    logged = capsys.readouterr().out
    assert "sync.mqtt_up" in logged  # the log was captured...
    assert password not in logged  # ...and the password is not in it


STANDARD = {"standard": {"currency": "EUR", "grace_minutes": 10,
                         "lines": [{"until_minutes": 60, "flat_minor": 250},
                                   {"per_minutes": 60, "amount_minor": 200}]}}


async def test_an_invalid_tariff_is_rejected_and_the_old_one_stays_in_force(
        broker: Mosquitto, journal: Journal, clock: FakeClock, journal_path: Path) -> None:
    applied: list[tuple[str, int]] = []
    async with BackendSim(mqtt_port=broker.port) as backend:
        await backend.ready.wait()
        sync = Sync(sync_settings(broker.port), journal, clock, FakeLot())
        sync.inbox.subscribe(lambda kind, version, _model: applied.append((kind, version)))
        async with running(sync):
            await sync.connected_event.wait()
            await backend.push_config(LOT, GATEWAY, "tariffs", 1, STANDARD)
            await wait_until(lambda: applied == [("tariffs", 1)])
            bad = {"standard": {"currency": "euro", "lines": []}}
            await backend.push_config(LOT, GATEWAY, "tariffs", 2, bad)
            await backend.push_config(LOT, GATEWAY, "deny_list", 1,
                                      [{"plate": "B-AD-666", "reason": "fraud"}])
            await wait_until(lambda: len(journaled(journal_path, "config.applied")) == 3)
            # A reconnect brings the retained documents again: nothing is reported twice.
            broker.stop()
            broker.start()
            sync.connected_event.clear()
            await asyncio.wait_for(sync.connected_event.wait(), 10)
            await asyncio.sleep(0.3)
            current = await sync.inbox.current("tariffs")
    reports = journaled(journal_path, "config.applied")
    assert [(r["kind"], r["version"], r["outcome"]) for r in reports] == [
        ("tariffs", 1, "applied"), ("tariffs", 2, "rejected"), ("deny_list", 1, "applied")]
    assert reports[1]["source"] == "mqtt"
    assert any("currency" in e for e in reports[1]["errors"])
    assert any("lines" in e for e in reports[1]["errors"])
    assert current is not None
    assert current[0] == 1
    assert current[1].root["standard"].grace_minutes == 10
    assert applied == [("tariffs", 1), ("deny_list", 1)]


async def test_http_ingest_and_config_pull_with_etags(journal: Journal, clock: FakeClock,
                                                      journal_path: Path) -> None:
    port = free_port()
    async with BackendSim(http_port=port) as backend:
        backend.set_config(GATEWAY, "permits", 3, [
            {"permitId": "P-1", "plates": ["M-XY-123"], "validUntil": "2026-12-31T23:00:00Z"}])
        settings = sync_settings(1, transport="http", config_poll_s=0.2, batch_size=100,
                                 http={"base_url": f"http://127.0.0.1:{port}", "token": "t0ken",
                                       "timeout_s": 5})
        await journal.commit((), [bay_event(clock, i) for i in range(250)])
        sync = Sync(settings, journal, clock, FakeLot())
        async with running(sync):
            await wait_until(lambda: sum(1 for r in backend.http_requests if r[2] == 304) >= 2)
            for i in range(10):
                await journal.commit((), [bay_event(clock, i)])
            total = journal.last_seq  # 260 and the permits' config.applied
            await backend.wait_for(SOURCE, total)
            await wait_until(lambda: journal.acked_through == total)
    assert_in_order_without_gaps(backend, total)
    assert {r[1] for r in backend.http_requests if r[0] == "POST"} == {
        f"/v1/gateways/{GATEWAY}/events"}
    permits = [r for r in journaled(journal_path, "config.applied") if r["kind"] == "permits"]
    assert permits == [{"kind": "permits", "version": 3, "outcome": "applied", "errors": [],
                        "source": "http"}]
    assert ("GET", f"/v1/gateways/{GATEWAY}/config/permits", 304) in backend.http_requests


async def test_http_ingest_is_idempotent_by_event_id(journal: Journal, clock: FakeClock) -> None:
    port = free_port()
    await journal.commit((), [bay_event(clock, i) for i in range(5)])
    records = await journal.read_outbox(0)
    async with BackendSim(http_port=port) as backend, HttpBackend(
            HttpConfig.model_validate({"base_url": f"http://127.0.0.1:{port}"}), GATEWAY) as http:
        await http.post_events(records, SOURCE)
        await http.post_events(records[2:], SOURCE)  # a retried batch
    assert backend.count(SOURCE) == 5
    assert backend.received[SOURCE].duplicates == 3


async def test_mqtt_unreachable_falls_back_to_http_then_returns(
        tmp_path: Path, journal: Journal, clock: FakeClock) -> None:
    http_port = free_port()
    broker = Mosquitto(tmp_path / "broker")  # not started yet: MQTT is unreachable
    async with BackendSim(http_port=http_port) as backend:
        settings = sync_settings(broker.port, http_fallback_after_s=0.3,
                                 http={"base_url": f"http://127.0.0.1:{http_port}"})
        await journal.commit((), [bay_event(clock, i) for i in range(100)])
        sync = Sync(settings, journal, clock, FakeLot())
        async with running(sync):
            await backend.wait_for(SOURCE, 100, within=15)
            await wait_until(lambda: journal.acked_through == 100)
            with broker:
                await asyncio.wait_for(sync.connected_event.wait(), 10)
                await journal.commit((), [bay_event(clock, 100)])
                await wait_until(lambda: journal.acked_through == 101)
                await asyncio.sleep(0.1)
    via = {e["seq"]: e for e in backend.events(SOURCE)}
    assert len(via) == 100  # the last one went over MQTT, with no MQTT backend listening
    assert backend.gaps(SOURCE) == []


async def test_resend_from_sequence_n_publishes_acked_events_again(
        broker: Mosquitto, journal: Journal, clock: FakeClock) -> None:
    async with BackendSim(mqtt_port=broker.port) as backend:
        await backend.ready.wait()
        sync = Sync(sync_settings(broker.port), journal, clock, FakeLot())
        await journal.commit((), [bay_event(clock, i) for i in range(30)])
        async with running(sync):
            await wait_until(lambda: journal.acked_through == 30)
            resend = command(clock, "resend", {"fromSequence": 21})
            await backend.send_command(LOT, GATEWAY, KEY.encode(), resend)
            reply = await backend.wait_reply(resend["commandId"])
            await wait_until(lambda: backend.received[SOURCE].duplicates == 10)
    assert reply["result"] == {"fromSequence": 21, "throughSequence": 30}
    again = [s for s in backend.received[SOURCE].arrivals if s != 31]  # 31 may come any time
    assert again[-10:] == list(range(21, 31))
    assert backend.count(SOURCE) == 31  # 30 and the resend's command.executed


async def test_shutdown_while_on_the_http_fallback_is_prompt(
        journal: Journal, clock: FakeClock) -> None:
    http_port = free_port()
    async with BackendSim(http_port=http_port) as backend:
        settings = sync_settings(free_port(), http_fallback_after_s=0.1,
                                 http={"base_url": f"http://127.0.0.1:{http_port}"})
        await journal.commit((), [bay_event(clock, 1)])
        sync = Sync(settings, journal, clock, FakeLot())
        task = asyncio.create_task(sync.run())
        await backend.wait_for(SOURCE, 1, within=10)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
    assert task in done
    assert task.cancelled()
