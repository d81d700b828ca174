"""The MQTT side: building the client from settings, and a windowed QoS 1 sender.

aiomqtt's `publish` at QoS 1 returns only after the broker's PUBACK (it waits
for paho's on_publish, which paho calls on PUBACK). Awaiting each in turn
costs a round trip per event, and even pipelined as tasks its per-call
bookkeeping (a task, an Event, a scan of all pending calls) held the drain to
about 4,000 events/s on a 2-core machine. So events go through
`EventClient.publish_nowait`: paho's `publish` is called directly, in
sequence order (it assigns the message id and queues the packet at once), and
a future per message id resolves on the PUBACK. Up to `window` are in flight.
paho's own in-flight limit is off (0): with one, paho rescans every unacked
message on each PUBACK, which cost more than everything else together; and
with none it never holds a packet back, so packets leave in publish order.
Everything else (connect, will, subscribe, presence) is plain aiomqtt.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import structlog

from gateway.config import MqttConfig, MqttTlsConfig
from gateway.journal import OutboxRecord

log = structlog.get_logger(__name__)

PUBACK_TIMEOUT_S = 30.0  # for aiomqtt's own calls (presence, state, replies)
CONNECT_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 256 * 1024  # a packed batch stays well under brokers' message limits


def tls_context(tls: MqttTlsConfig) -> ssl.SSLContext:
    """A client TLS context: the CA (or the system's), and the client certificate if given.

    Reads files: call it off the event loop.
    """
    context = ssl.create_default_context(
        cafile=None if tls.ca_file is None else str(tls.ca_file))
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(Path(tls.cert_file)), str(Path(tls.key_file)))
    return context


class EventClient(aiomqtt.Client):
    """aiomqtt's client plus a pipelined QoS 1 publish for the outbox drain.

    It reaches into two of aiomqtt's internals, `_client` (the paho client) and
    `_on_publish` (paho's PUBACK callback); pyproject.toml pins aiomqtt 2.x and
    the sync tests exercise this path against a real broker.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: dict[int, asyncio.Future[None]] = {}

    def publish_nowait(self, topic: str, payload: str) -> asyncio.Future[None]:
        """Queue a QoS 1 publish now; the future resolves on its PUBACK."""
        info = self._client.publish(topic, payload, 1, False)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = future  # a QoS 1 PUBACK cannot arrive before this returns
        return future

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int,
                    reason_code: Any, properties: Any) -> None:
        future = self._acks.pop(mid, None)
        if future is None:
            super()._on_publish(client, userdata, mid, reason_code, properties)
        elif not future.done():
            future.set_result(None)

    def abandon_pending(self) -> int:
        """Cancel every publish still waiting for its PUBACK (the link is gone)."""
        pending = list(self._acks.values())
        self._acks.clear()
        for future in pending:
            future.cancel()
        return len(pending)


def make_client(
    settings: MqttConfig,
    *,
    client_id: str,
    will_topic: str,
    window: int,
    context: ssl.SSLContext | None,
) -> EventClient:
    """A client for one connection attempt (aiomqtt clients are not reconnected in place)."""
    password = None if settings.password is None else settings.password.get_secret_value()
    client = EventClient(
        settings.host,
        settings.port,
        identifier=client_id,
        username=settings.username,
        password=password,
        keepalive=settings.keepalive_s,
        will=aiomqtt.Will(will_topic, b"offline", qos=1, retain=True),
        tls_context=context,
        max_inflight_messages=0,  # unlimited in paho; the sender's window bounds it
        # The wait for CONNACK (and the default for other calls). A broker that refuses
        # the TLS client certificate after the handshake is only noticed by this timeout.
        timeout=min(CONNECT_TIMEOUT_S, float(settings.keepalive_s)),
    )
    # aiomqtt warns on every call past 10 pending ones; a full window is normal here.
    client.pending_calls_threshold = window + 100
    return client


class MqttSender:
    """Publishes outbox records at QoS 1 with at most `window` messages awaiting their PUBACK.

    Consecutive records are packed up to `per_message` events (and `MAX_MESSAGE_BYTES`)
    into one message, a CloudEvents JSON batch (an array, in sequence order); a lone
    record, as a live event usually is, goes as a single structured-mode event. One
    PUBACK then acknowledges every event of its message.
    """

    def __init__(self, client: EventClient, topic: str, source: str, window: int,
                 per_message: int = 1) -> None:
        self._client = client
        self._topic = topic
        self._source = source
        self._per_message = per_message
        self._slots = asyncio.Semaphore(window)

    async def send(self, batch: Sequence[OutboxRecord]) -> list[asyncio.Future[None]]:
        futures: list[asyncio.Future[None]] = []
        for group in self._messages(batch):
            await self._slots.acquire()
            try:
                payload = group[0] if len(group) == 1 else "[" + ",".join(group) + "]"
                future = self._client.publish_nowait(self._topic, payload)
            except BaseException:
                self._slots.release()
                raise
            future.add_done_callback(self._release)
            futures.extend([future] * len(group))
        return futures

    def _messages(self, batch: Sequence[OutboxRecord]) -> list[list[str]]:
        groups: list[list[str]] = []
        size = 0
        for record in batch:
            text = record.to_json(self._source)
            if (not groups or len(groups[-1]) >= self._per_message
                    or size + len(text) > MAX_MESSAGE_BYTES):
                groups.append([])
                size = 0
            groups[-1].append(text)
            size += len(text) + 1
        return groups

    def _release(self, _future: asyncio.Future[None]) -> None:
        self._slots.release()

    async def close(self) -> None:
        """Abandon what is still in flight (it stays unacked and is sent again later)."""
        self._client.abandon_pending()
