"""`bench mqtt-day`'s counter: PUBLISH sizes as MQTT 3.1.1 frames them, and topics counted by
their part under the gateway's base, on a real mosquitto."""

from __future__ import annotations

import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.bench.mqtt_day import TopicCounter, publish_bytes
from tests.sync import mosquitto
from tests.sync.mosquitto import Mosquitto

broker = mosquitto.broker  # the fixture: a fresh mosquitto per test


@pytest.mark.parametrize(("topic", "payload", "size"), [
    ("a/b", b"x" * 10, 1 + 1 + 2 + 3 + 2 + 10),
    ("a/b", b"x" * 120, 1 + 1 + 2 + 3 + 2 + 120),  # remaining length 127: one byte
    ("a/b", b"x" * 121, 1 + 2 + 2 + 3 + 2 + 121),  # 128: two bytes
    ("t", b"x" * 20_000, 1 + 3 + 2 + 1 + 2 + 20_000),  # 16,384 and more: three
])
def test_a_qos1_publish_is_framed_as_mqtt_does(topic: str, payload: bytes, size: int) -> None:
    assert publish_bytes(topic, payload) == size


@pytest.mark.slow
def test_the_counter_counts_by_topic_under_the_gateway(broker: Mosquitto) -> None:
    counter = TopicCounter(broker.port, "parking/v1/lot-7/gw-1")
    sender = paho.Client(CallbackAPIVersion.VERSION2, client_id="sender")
    sender.connect("127.0.0.1", broker.port)
    sender.loop_start()
    try:
        for topic, payload in [("events", b'{"a":1}'), ("events", b"[1,2]"),
                               ("state/health", b"{}"), ("replies/ops/42", b"{}"),
                               ("replies", b"{}")]:
            sender.publish(f"parking/v1/lot-7/gw-1/{topic}", payload, qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 10
        while sum(n for n, _ in counter.counts.values()) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sender.loop_stop()
        sender.disconnect()
        counter.close()
    events = publish_bytes("parking/v1/lot-7/gw-1/events", b'{"a":1}') + publish_bytes(
        "parking/v1/lot-7/gw-1/events", b"[1,2]")
    assert dict(counter.counts) == {
        "events": [2, events],
        "state/health": [1, publish_bytes("parking/v1/lot-7/gw-1/state/health", b"{}")],
        "replies": [2, publish_bytes("parking/v1/lot-7/gw-1/replies/ops/42", b"{}")
                    + publish_bytes("parking/v1/lot-7/gw-1/replies", b"{}")],
    }

