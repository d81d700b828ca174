"""`parking-gateway bench availability`: how soon the lot's availability reaches its readers.

* A bay change to its readers: a sensor reading handed to the daemon as a driver hands it over
  (`occupancy.on_reading`), to the new availability document read by a client of the HTTP live
  stream (`p50/p99_change_to_client_ms`, Server-Sent Events) and by an MQTT subscriber of the
  retained `state/occupancy` (`..._change_to_mqtt_ms`). The way is the daemon's own: the change
  journaled (its fsync included), the availability rebuilt, the stream written, the state
  published through the broker.
* `GET /api/v1/availability` under `clients` concurrent clients, each asking again as soon as
  it has its answer, for `seconds` (p50, p95, p99, requests per second).

The daemon is the real one on the demo lot, as `bench footprint` runs it (an idle camera at
each lane, nothing on the sensor bus's port: the bench's readings are the only ones its bays
get), with `[http]` on and a local mosquitto as its backend, in this process. The readers are
another process (`_readers`), with a core of their own on a 2-core machine; both read the one
CLOCK_MONOTONIC, so their receipt times compare with the changes' times here.

Changes are made one at a time, `GAP_S` apart: more than the feed's 100 ms coalescing window, so
each goes out at once and measures its own way. A change that comes within a burst waits up to
100 ms more, by design (docs/http.md).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from gateway.bench.broker import MOSQUITTO, Mosquitto
from gateway.bench.footprint import DEMO_LOT, IdleCamera
from gateway.core.events import BayState
from gateway.core.stats import percentile

GAP_S = 0.25  # between two changes
START_S = 60.0  # the most the daemon and the readers may take to start
LAND_S = 1.0  # after the last change, for its receipts
BAY_STATES: tuple[BayState, BayState] = ("occupied", "free")  # the bay's, in turn


def availability_bench(*, changes: int = 100, clients: int = 50, seconds: float = 10.0
                       ) -> dict[str, Any]:
    """Run the bench (about `changes` x GAP_S + `seconds` + the start); its figures."""
    if not Path(MOSQUITTO).exists():
        raise RuntimeError(f"no mosquitto at {MOSQUITTO}: the bench needs a local broker")
    with (tempfile.TemporaryDirectory(prefix="parking-gateway-bench-availability-") as work,
          Mosquitto(Path(work) / "broker") as broker):
        return asyncio.run(_bench(Path(work), broker.port, changes, clients, seconds))


async def _bench(work: Path, mqtt_port: int, changes: int, clients: int,
                 seconds: float) -> dict[str, Any]:
    from gateway.app import Gateway, HardwareOverrides
    from gateway.config import load_settings
    from gateway.drivers import BayReading
    from gateway.runtime.log import configure_logging
    from gateway.runtime.notify import Notifier

    configure_logging("error", "console", sys.stderr)  # the figures are the output
    settings = load_settings(DEMO_LOT, env={
        "PARKING_GATEWAY__JOURNAL__PATH": str(work / "journal.db"),
        "PARKING_GATEWAY__CONTROL__SOCKET_PATH": str(work / "control.sock"),
        "PARKING_GATEWAY__BUS__PORT": str(work / "ttyUSB-absent"),
        "PARKING_GATEWAY__SYNC__MQTT__HOST": "127.0.0.1",
        "PARKING_GATEWAY__SYNC__MQTT__PORT": str(mqtt_port),
        "PARKING_GATEWAY__HTTP__ENABLED": "true",
        "PARKING_GATEWAY__HTTP__LISTEN": "127.0.0.1:0",
        "PARKING_GATEWAY__HTTP__ANONYMOUS_VIEWER": "true",
    })
    bay = next(b.id for b in settings.bays if b.sensor.kind == "modbus")
    gw = settings.gateway
    topic = f"{settings.sync.topic_prefix}/{gw.lot_id}/{gw.gateway_id}/state/occupancy"
    cameras = {lane.id: IdleCamera(lane.id) for lane in settings.lanes}
    gateway = Gateway(settings, notifier=Notifier(None),
                      hardware=HardwareOverrides(cameras=cameras))
    daemon = asyncio.create_task(gateway.run())
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    readers = None
    try:
        async with asyncio.timeout(START_S):
            await _first(gateway.started.wait(), daemon)
            assert gateway.web is not None
            await _first(gateway.web.listening.wait(), daemon)
        url = f"http://127.0.0.1:{gateway.web.port}"
        readers = context.Process(target=_readers, args=(url, mqtt_port, topic, theirs),
                                  daemon=True)
        readers.start()
        if not await asyncio.to_thread(ours.poll, START_S) or ours.recv() != "ready":
            raise RuntimeError("the stream client and the MQTT subscriber did not start")
        made: list[tuple[float, int]] = []  # when, and the lot's occupied bays after it
        for i in range(changes):
            await asyncio.sleep(GAP_S)
            state = BAY_STATES[i % 2]
            made.append((time.monotonic(), 1 if state == "occupied" else 0))
            gateway.occupancy.on_reading(BayReading(bay, state, "modbus:bench",
                                                    gateway.clock.stamp()))
        await asyncio.sleep(LAND_S)
        ours.send(("receipts",))
        receipts: dict[str, list[tuple[float, int]]] = await asyncio.to_thread(ours.recv)
        ours.send(("load", url, clients, seconds))
        load: dict[str, Any] = await asyncio.to_thread(ours.recv)
        ours.send(("quit",))
    finally:
        if readers is not None:
            readers.join(10)
            readers.kill()
        gateway.stop()
        await asyncio.wait_for(daemon, 30)
    stream = _delays(made, receipts["sse"], "stream client")
    mqtt = _delays(made, receipts["mqtt"], "MQTT subscriber")
    gets: list[float] = load["latencies_ms"]
    return {
        "changes": changes,
        "p50_change_to_client_ms": _ms(percentile(stream, 0.50)),
        "p99_change_to_client_ms": _ms(percentile(stream, 0.99)),
        "p50_change_to_mqtt_ms": _ms(percentile(mqtt, 0.50)),
        "p99_change_to_mqtt_ms": _ms(percentile(mqtt, 0.99)),
        "get_clients": clients,
        "get_requests": len(gets),
        "get_errors": load["errors"],
        "gets_per_s": round(len(gets) / load["seconds"], 1),
        "p50_get_ms": _ms(percentile(gets, 0.50)),
        "p95_get_ms": _ms(percentile(gets, 0.95)),
        "p99_get_ms": _ms(percentile(gets, 0.99)),
    }


async def _first(waited: Any, daemon: asyncio.Task[None]) -> None:
    """Wait for `waited`; an error if the daemon ends first (it failed to start)."""
    waiting = asyncio.ensure_future(waited)
    await asyncio.wait([waiting, daemon], return_when=asyncio.FIRST_COMPLETED)
    if not waiting.done():
        waiting.cancel()
        daemon.result()
        raise RuntimeError("the daemon stopped while starting")


def _delays(made: list[tuple[float, int]], receipts: list[tuple[float, int]],
            reader: str) -> list[float]:
    """Each change's delay (ms) to the reader: to the first document after it that shows it
    (the one before shows the other count, so no earlier document can)."""
    delays = []
    for at, occupied in made:
        seen = next((t for t, shown in receipts if t >= at and shown == occupied), None)
        if seen is None:
            raise RuntimeError(f"a bay change never reached the {reader}")
        delays.append((seen - at) * 1000.0)
    return delays


def _ms(value: float | None) -> float:
    return round(value or 0.0, 2)


# --- the readers' process --------------------------------------------------------------------


def _readers(url: str, mqtt_port: int, topic: str, conn: Connection) -> None:
    """The other process: a stream client and an MQTT subscriber noting when each document
    came and the lot's occupied bays in it; on request, the GET clients."""
    asyncio.run(_read(url, mqtt_port, topic, conn))


async def _read(url: str, mqtt_port: int, topic: str, conn: Connection) -> None:
    import aiohttp
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    stream: list[tuple[float, int]] = []
    mqtt: list[tuple[float, int]] = []
    lock = threading.Lock()

    def on_message(_client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        at = time.monotonic()
        with lock:
            mqtt.append((at, json.loads(message.payload)["lot"]["occupied"]))

    subscriber = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-availability")
    subscriber.on_message = on_message
    subscriber.connect("127.0.0.1", mqtt_port)
    subscriber.subscribe(topic, qos=1)
    subscriber.loop_start()
    async with aiohttp.ClientSession() as session:
        follower = asyncio.create_task(_follow(session, f"{url}/api/v1/availability/stream",
                                               stream))
        try:
            async with asyncio.timeout(START_S):
                while not (stream and mqtt):  # noqa: ASYNC110 (lists filled by two readers)
                    await asyncio.sleep(0.01)
            conn.send("ready")
            while (command := await asyncio.to_thread(conn.recv))[0] != "quit":
                if command[0] == "receipts":
                    with lock:
                        conn.send({"sse": list(stream), "mqtt": list(mqtt)})
                else:
                    conn.send(await _load(*command[1:]))
        finally:
            follower.cancel()
            subscriber.loop_stop()
            subscriber.disconnect()


async def _follow(session: Any, url: str, seen: list[tuple[float, int]]) -> None:
    async with session.get(url) as response:
        async for line in response.content:
            if line.startswith(b"data: "):
                seen.append((time.monotonic(), json.loads(line[6:])["lot"]["occupied"]))


async def _load(url: str, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` clients asking for the availability for `seconds`, each again at once."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.monotonic()
        end = began + seconds

        async def client() -> None:
            nonlocal errors
            while time.monotonic() < end:
                asked = time.perf_counter()
                async with session.get(f"{url}/api/v1/availability") as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        continue
                latencies.append((time.perf_counter() - asked) * 1000.0)

        await asyncio.gather(*(client() for _ in range(clients)))
        took = time.monotonic() - began
    return {"latencies_ms": latencies, "errors": errors, "seconds": took}
