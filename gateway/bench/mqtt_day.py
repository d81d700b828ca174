"""`parking-gateway bench mqtt-day`: what the gateway sends its broker in a day, by topic.

A gateway on a cellular link pays for every byte. This runs the demo lot's day
(`parking-gateway demo`: the real daemon on the simulated lot, in virtual time, flat out)
against a local mosquitto, with a subscriber to every topic counting the messages and the
bytes of the MQTT PUBLISH packets the gateway sent, by topic: `events`, `presence`, each
`state/<name>` and `replies`. TCP, IP and TLS add their own overheads on top.

The demo runs for `seconds` of real time; on a small machine that covers only the first
hours of its day (from 07:30, the morning rush and the busiest hours). The figures per lot
hour are then projected to a 24-hour day: an upper bound for the topics that follow the
traffic (events, lanes, occupancy), exact for those that follow the clock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.bench.broker import MOSQUITTO, Mosquitto

DEMO_SCENARIO = Path(__file__).resolve().parents[2] / "hardware-sim" / "scenarios" / "demo.toml"
CLI = "from gateway.cli import main; main()"
FLAT_OUT = 1e9  # the demo's --pace: lot seconds per real second at most, i.e. no limit
QUIET_S = 1.0  # the counter waits this long without a message before it stops counting
DAY_S = 24 * 3600.0
MB = 1_000_000  # a mobile data plan's megabyte


def publish_bytes(topic: str, payload: bytes | bytearray) -> int:
    """The size of a QoS 1 PUBLISH packet: fixed header, topic, packet id, payload."""
    remaining = 2 + len(topic.encode()) + 2 + len(payload)
    length_bytes = 1
    while remaining >= 128 ** length_bytes:
        length_bytes += 1
    return 1 + length_bytes + remaining


class TopicCounter:
    """A subscriber to every topic of one broker, counting messages and PUBLISH bytes by
    the topic's part after `<prefix>/<lot>/<gateway>/` (paho's own thread delivers them)."""

    def __init__(self, port: int, base: str) -> None:
        self.base = base + "/"
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.last_at = time.monotonic()
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-mqtt-day")
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_args: self._subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.subscribe("#", qos=1)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError("the counting subscriber was not subscribed within 10 s")

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        name = message.topic.removeprefix(self.base)
        name = "replies" if name.startswith("replies/") else name
        with self._lock:
            counted = self.counts[name]
            counted[0] += 1
            counted[1] += publish_bytes(message.topic, message.payload)
            self.last_at = time.monotonic()

    def wait_quiet(self, quiet_s: float = QUIET_S, limit_s: float = 30.0) -> None:
        """Until no message came for `quiet_s`: the broker has passed on all it had."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() - self.last_at < quiet_s and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def mqtt_day(seconds: float) -> dict[str, Any]:
    """Run the demo lot for `seconds` (real) against a local broker; the bytes by topic."""
    if not Path(MOSQUITTO).exists():
        raise RuntimeError(f"no mosquitto at {MOSQUITTO}: the bench needs a local broker")
    if not DEMO_SCENARIO.exists():
        raise RuntimeError(f"no demo scenario at {DEMO_SCENARIO}: run the bench in a checkout")
    scenario = tomllib.loads(DEMO_SCENARIO.read_text())
    start: datetime = scenario["scenario"]["start"]
    with (tempfile.TemporaryDirectory(prefix="parking-gateway-bench-mqtt-") as work,
          Mosquitto(Path(work) / "broker") as broker):
        # The demo takes the environment's overrides, as `run` does: the broker's port here.
        env = {**os.environ, "PARKING_GATEWAY__SYNC__MQTT__HOST": "127.0.0.1",
               "PARKING_GATEWAY__SYNC__MQTT__PORT": str(broker.port)}
        counter = TopicCounter(broker.port,
                               _base(DEMO_SCENARIO.parent / scenario["lot"]["config"], env))
        try:
            began = time.monotonic()
            summary = _demo(Path(work) / "demo", env, seconds)
            real_s = time.monotonic() - began
            counter.wait_quiet()
        finally:
            counter.close()
    lot_s = (datetime.fromisoformat(summary["lot_time"]) - start).total_seconds()
    if lot_s <= 0:
        raise RuntimeError("the demo's lot time did not move")
    scale = DAY_S / lot_s
    topics = {name: {"messages": n, "bytes": size, "mb_per_day": round(size * scale / MB, 3)}
              for name, (n, size) in sorted(counter.counts.items())}
    total = sum(t["bytes"] for t in topics.values())
    return {
        "real_seconds": round(real_s, 1),
        "lot_hours": round(lot_s / 3600, 2),
        "lot_from": start.isoformat(),
        "lot_to": summary["lot_time"],
        "vehicles_entered": summary["vehicles"]["entered"],
        "events_journaled": summary["events_journaled"],
        "events_unsynced": summary["events_unsynced"],
        "bytes": total,
        "mb_per_day": round(total * scale / MB, 2),
        "projected": lot_s < DAY_S,
        "topics": topics,
    }


def _demo(state: Path, env: dict[str, str], seconds: float) -> dict[str, Any]:
    """`parking-gateway demo` flat out for `seconds`, with `env`; its JSON summary."""
    done = subprocess.run(
        [sys.executable, "-c", CLI, "demo", "--json", "--pace", str(FLAT_OUT),
         "--duration", str(seconds), "--state-dir", str(state)],
        env=env, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the demo exited with {done.returncode}:\n{done.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def _base(lot: Path, env: dict[str, str]) -> str:
    """The demo lot's topic base, `<prefix>/<lot>/<gateway>`, as the demo will load it."""
    from gateway.config import load_settings

    settings = load_settings(lot.resolve(), env=env)
    gw = settings.gateway
    return f"{settings.sync.topic_prefix}/{gw.lot_id}/{gw.gateway_id}"
