"""The `parking-gateway bench sync` benchmark: drain rate and commit-to-receipt latency.

The command itself is in gateway/sync/cli.py.

Starts its own mosquitto on a free 127.0.0.1 port and a journal in a scratch
folder. First a backlog of `events` is committed while the link is down and
drained at QoS 1 with no rate limit (events/s from the drain's start until
the last PUBACK is acked in the journal). Then, online, events are committed
one at a time and timed from the call to `commit` (so the fsync counts) to
their receipt by a subscriber at QoS 1.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.bench.broker import Mosquitto
from gateway.config import Settings
from gateway.core import events
from gateway.core.clock import SystemClock
from gateway.core.operations import OperationRefused
from gateway.core.stats import percentile
from gateway.journal import Journal
from gateway.runtime.aio import cancel_and_wait
from gateway.sync.service import Sync

PREFILL_CHUNK = 2000


class _NoLot:
    """A lot that refuses everything: the benchmark sends no commands."""

    async def status(self) -> dict[str, Any]:
        return {}

    async def open_gate(self, lane_id: str, *, reason: str, actor: str) -> None:
        raise OperationRefused("benchmark")

    async def set_lane_mode(self, lane_id: str, mode: Any, *, actor: str) -> None:
        raise OperationRefused("benchmark")

    async def set_lot_state(self, state: Any, *, actor: str) -> None:
        raise OperationRefused("benchmark")

    async def set_bay_service(self, bay_id: str, in_service: bool, *, actor: str) -> None:
        raise OperationRefused("benchmark")

    async def set_level_count(self, level: str, count: int, *, actor: str) -> dict[str, Any]:
        raise OperationRefused("benchmark")

    async def level_counts(self) -> dict[str, Any]:
        return {"levels": []}

    async def alarms(self) -> list[dict[str, Any]]:
        return []

    async def acknowledge_alarm(self, alarm_id: str, *, actor: str) -> dict[str, Any]:
        raise OperationRefused("benchmark")

    async def open_sessions(self) -> list[dict[str, Any]]:
        return []

    async def recent_plates(self, limit: int = 50) -> list[dict[str, Any]]:
        return []

    async def purge_plate(self, plate: str, *, actor: str) -> dict[str, Any]:
        raise OperationRefused("benchmark")

    async def export_plate(self, plate: str) -> dict[str, Any]:
        raise OperationRefused("benchmark")

    def watch_sensors(self) -> AsyncIterator[dict[str, Any]]:
        raise OperationRefused("benchmark")

    async def reset_passback(self, plate: str, *, actor: str) -> dict[str, Any]:
        raise OperationRefused("benchmark")

    async def signs(self) -> list[dict[str, Any]]:
        return []

    async def set_sign_mode(self, sign_id: str, mode: Any, *, offset: int | None,
                            actor: str) -> dict[str, Any]:
        raise OperationRefused("benchmark")


def _event(clock: SystemClock, i: int) -> events.Event:
    return events.bay_changed(
        at=clock.now(), bay_id=f"bay-{i % 500:04d}", floor=str(i % 3), zone="A",
        bay_type="regular", state="occupied" if i % 2 else "free",
        previous_state="free" if i % 2 else "occupied", source="magnetic", sensor_healthy=True)


def _settings(port: int, journal_path: Path, events_per_message: int) -> Settings:
    return Settings.model_validate({
        "gateway": {"lot_id": "bench-lot", "gateway_id": "gw-1", "timezone": "UTC",
                    "default_tariff": "standard"},
        "tariffs": {"standard": {"currency": "EUR", "lines": [{"flat_minor": 100}]}},
        "journal": {"path": str(journal_path)},
        "sync": {"mqtt": {"host": "127.0.0.1", "port": port}, "backlog_rate_per_s": None,
                 "reconnect_min_s": 0.05, "reconnect_max_s": 0.5,
                 "events_per_message": events_per_message},
    })


async def sync_bench(directory: Path, *, events_count: int, latency_events: int = 1000,
                     latency_rate_per_s: float = 200.0, events_per_message: int = 100
                     ) -> dict[str, float]:
    broker = Mosquitto(directory / "broker")
    broker.start()
    clock = SystemClock()
    settings = _settings(broker.port, directory / "journal.db", events_per_message)
    topic = "parking/v1/bench-lot/gw-1/events"
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    subscriber = context.Process(target=_subscriber, args=(broker.port, topic, theirs),
                                 daemon=True)
    subscriber.start()
    journal = await Journal.open(settings.journal, clock=clock)
    try:
        if not await asyncio.to_thread(ours.poll, 30) or ours.recv() != "ready":
            raise RuntimeError("the subscriber did not start")
        for start in range(0, events_count, PREFILL_CHUNK):
            chunk = [_event(clock, i) for i in range(start, min(start + PREFILL_CHUNK,
                                                                   events_count))]
            await journal.commit((), chunk)
        sync = Sync(settings, journal, clock, _NoLot())
        began = time.monotonic()
        runner = asyncio.create_task(sync.run())
        try:
            while journal.acked_through < events_count:
                if runner.done():
                    runner.result()
                    raise RuntimeError("sync stopped during the drain")
                await asyncio.sleep(0.005)
            drain_s = time.monotonic() - began
            committed: dict[int, float] = {}
            for i in range(latency_events):
                t = time.monotonic()
                (seq,) = await journal.commit((), (_event(clock, i),))
                committed[seq] = t
                await asyncio.sleep(1.0 / latency_rate_per_s)
            await asyncio.sleep(0.5)  # the last ones land
        finally:
            await cancel_and_wait(runner)
        ours.send(sorted(committed))
        received: dict[int, float] = await asyncio.to_thread(ours.recv)
    finally:
        await journal.close()
        subscriber.terminate()
        subscriber.join(5)
        broker.stop()
    missing = [s for s in committed if s not in received]
    if missing:
        raise RuntimeError(f"{len(missing)} latency events never reached the subscriber")
    latencies = [(received[s] - committed[s]) * 1000 for s in committed]
    return {"drain_events_per_s": round(events_count / drain_s, 1),
            "p50_latency_ms": round(percentile(latencies, 0.50) or 0.0, 2),
            "p99_latency_ms": round(percentile(latencies, 0.99) or 0.0, 2),
            "events": events_count, "latency_events": latency_events,
            "events_per_message": events_per_message}


def _subscriber(port: int, topic: str, conn: Connection) -> None:
    """The backend's side, in its own process: receipt times by sequence, at QoS 1.

    time.monotonic is CLOCK_MONOTONIC on Linux, one clock for both processes.
    """
    received: dict[int, float] = {}
    subscribed = threading.Event()

    def on_message(_c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        at = time.monotonic()
        payload = message.payload
        i = payload.find(b'"seq":')
        while i != -1:  # one event, or a batch of them
            i += 6
            end = payload.index(b",", i)
            received.setdefault(int(payload[i:end]), at)
            i = payload.find(b'"seq":', end)

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-backend")
    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    client.connect("127.0.0.1", port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    subscribed.wait(30)
    conn.send("ready")
    wanted: list[int] = conn.recv()
    client.loop_stop()
    conn.send({seq: received[seq] for seq in wanted if seq in received})
