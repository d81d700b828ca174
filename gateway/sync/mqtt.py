"""The MQTT side: a paho client run by the event loop, and a windowed QoS 1 sender.

`EventClient` owns a paho-mqtt 2 client and uses only its public API, the way
Home Assistant's MQTT client does: paho's socket callbacks register its socket
with the asyncio loop (`add_reader`, `add_writer`), the loop calls
`loop_read`, `loop_write` and, once a second, `loop_misc` (keepalive). So
every paho callback runs on the loop's thread and resolves its future directly,
with no thread hop per message. Only `connect` (DNS, TCP, the TLS handshake)
blocks; it runs in a thread, and the two socket callbacks it fires hop back.

Awaiting each QoS 1 publish in turn costs a round trip per message, so the
outbox drain uses `EventClient.publish_nowait`: paho's `publish` is called at
once, in sequence order (it assigns the message id and queues the packet), and
a future per message id resolves on the PUBACK, or fails when the link ends
first. Up to `window` are in flight. paho's own in-flight limit is off (0):
with one, paho rescans every unacked message on each PUBACK, which cost more
than everything else together; and with none it never holds a packet back, so
packets leave in publish order.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config import MqttConfig, MqttTlsConfig
from gateway.journal import OutboxRecord

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike

log = structlog.get_logger(__name__)

PUBACK_TIMEOUT_S = 30.0  # for single publishes (presence, state, replies)
CONNECT_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 256 * 1024  # a packed batch stays well under brokers' message limits
HOUSEKEEPING_S = 1.0  # how often paho's keepalive bookkeeping runs


class MqttError(Exception):
    """The link is gone or the broker refused or ignored a request: reconnect."""


@dataclass(frozen=True, slots=True)
class Message:
    """One inbound message."""

    topic: str
    payload: bytes
    retain: bool


def tls_context(tls: MqttTlsConfig) -> ssl.SSLContext:
    """A client TLS context: the CA (or the system's), and the client certificate if given.

    Reads files: call it off the event loop.
    """
    context = ssl.create_default_context(
        cafile=None if tls.ca_file is None else str(tls.ca_file))
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(Path(tls.cert_file)), str(Path(tls.key_file)))
    return context


class EventClient:
    """One connection to the broker: `async with client:` connects, and disconnects at the end.

    Build it on the event loop's thread. It is not reconnected in place: a lost link ends it
    (pending calls fail, `messages` raises :class:`MqttError`) and the caller builds another.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        will_topic: str,
        keepalive_s: int = 60,
        username: str | None = None,
        password: str | None = None,
        context: ssl.SSLContext | None = None,
        timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s  # for CONNACK, SUBACK, and a publish given no timeout
        self._keepalive_s = keepalive_s
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             reconnect_on_failure=False)
        client.max_inflight_messages_set(0)  # unlimited in paho; the sender's window bounds it
        client.will_set(will_topic, b"offline", qos=1, retain=True)
        if username is not None:
            client.username_pw_set(username, password)
        if context is not None:
            client.tls_set_context(context)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        self._paho = client
        self._fd: int | None = None  # the socket the loop watches
        self._housekeeping: asyncio.Task[None] | None = None
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._ended: str | None = None  # why the link ended, once it has
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._subacks: dict[int, asyncio.Future[None]] = {}
        self._inbox: asyncio.Queue[Message | None] = asyncio.Queue()  # None: the link ended

    # --- the connection ---

    async def __aenter__(self) -> Self:
        """Connect and wait for the broker's CONNACK; MqttError if either fails in time."""
        connecting = self._loop.run_in_executor(None, self._connect)
        try:
            await asyncio.shield(connecting)
        except asyncio.CancelledError:
            # The thread finishes the connect anyway: close what it opens.
            connecting.add_done_callback(self._close_after_connect)
            raise
        except OSError as e:  # refused, unreachable, TLS handshake, DNS
            reason = f"cannot connect to {self.host}:{self.port}: {e}"
            self._end(reason)
            raise MqttError(reason) from None
        try:
            # A broker that refuses the TLS client certificate after the handshake is only
            # noticed by this timeout.
            await self._wait(self._connected, None, "CONNACK")
        except BaseException:
            self._close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        """Disconnect cleanly (the broker then drops the will) if the link is still up."""
        if self._ended is None and self._paho.disconnect() == paho.MQTT_ERR_SUCCESS:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await asyncio.shield(self._closed)
            except TimeoutError:
                pass  # closed below
        self._close()

    def _connect(self) -> None:
        self._paho.connect(self.host, self.port, self._keepalive_s)

    def _close_after_connect(self, connecting: asyncio.Future[None]) -> None:
        if not connecting.cancelled():
            connecting.exception()  # retrieved: nobody waits for it any more
        self._close()

    def _close(self) -> None:
        """Drop the socket now, without a DISCONNECT; idempotent."""
        sock = self._paho.socket()
        self._unwatch()
        if sock is not None:
            sock.close()
        self._end("disconnected")

    def _end(self, reason: str) -> None:
        """The link is over: fail what waits on it and end `messages`; the first reason stays."""
        if self._ended is not None:
            return
        self._ended = reason
        waiting = [self._connected, *self._acks.values(), *self._subacks.values()]
        self._acks.clear()
        self._subacks.clear()
        for future in waiting:
            if not future.done():
                future.set_exception(MqttError(reason))
        if self._connected.done() and not self._connected.cancelled():
            self._connected.exception()  # nobody else may look at it
        self._inbox.put_nowait(None)
        if not self._closed.done():
            self._closed.set_result(None)

    async def _wait(self, future: asyncio.Future[None], limit_s: float | None,
                    what: str) -> None:
        """Wait for the broker's answer; none in time is a failed link, an MqttError too."""
        limit = self.timeout_s if limit_s is None else limit_s
        try:
            async with asyncio.timeout(limit):
                await asyncio.shield(future)
        except TimeoutError:
            raise MqttError(f"no {what} from {self.host}:{self.port} within {limit:g} s"
                            ) from None

    # --- publish, subscribe, receive ---

    def publish_nowait(self, topic: str, payload: str | bytes, *,
                       retain: bool = False) -> asyncio.Future[None]:
        """Queue a QoS 1 publish now; the future resolves on its PUBACK (MqttError: link lost)."""
        info = self._paho.publish(topic, payload, 1, retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise MqttError(f"cannot publish: {self._ended or paho.error_string(info.rc)}")
        future: asyncio.Future[None] = self._loop.create_future()
        self._acks[info.mid] = future  # its PUBACK is read on this thread, after this returns
        return future

    async def publish(self, topic: str, payload: str | bytes, *, qos: Literal[0, 1] = 1,
                      retain: bool = False,
                      timeout: float | None = None) -> None:  # noqa: ASYNC109 (see `_wait`)
        """Publish; at QoS 1 return once the broker has it (its PUBACK)."""
        if qos == 0:
            info = self._paho.publish(topic, payload, 0, retain)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise MqttError(f"cannot publish: {self._ended or paho.error_string(info.rc)}")
            return
        future = self.publish_nowait(topic, payload, retain=retain)
        try:
            await self._wait(future, timeout, "PUBACK")
        finally:
            future.cancel()  # a late PUBACK finds it done

    async def subscribe(self, topic: str, qos: Literal[0, 1] = 1,
                        timeout: float | None = None) -> None:  # noqa: ASYNC109 (see `_wait`)
        """Subscribe and wait for the SUBACK; MqttError if the broker refuses."""
        rc, mid = self._paho.subscribe(topic, qos)
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"cannot subscribe: {self._ended or paho.error_string(rc)}")
        future: asyncio.Future[None] = self._loop.create_future()
        self._subacks[mid] = future
        try:
            await self._wait(future, timeout, "SUBACK")
        finally:
            future.cancel()

    @property
    def messages(self) -> AsyncIterator[Message]:
        """Inbound messages in arrival order; raises MqttError when the link ends."""
        return self._receive()

    async def _receive(self) -> AsyncIterator[Message]:
        while (message := await self._inbox.get()) is not None:
            yield message
        self._inbox.put_nowait(None)  # for any other reader
        raise MqttError(self._ended)

    def take_unread(self) -> list[Message]:
        """The messages that arrived but were not read from `messages`, taken out of the client.

        For after the link is over: a reader cancelled first would otherwise lose them with
        the client.
        """
        unread = []
        while not self._inbox.empty():
            if (message := self._inbox.get_nowait()) is not None:
                unread.append(message)
        if self._ended is not None:
            self._inbox.put_nowait(None)  # `messages` still ends
        return unread

    def abandon_pending(self) -> int:
        """Cancel every publish still waiting for its PUBACK (the link is gone)."""
        pending = list(self._acks.values())
        self._acks.clear()
        for future in pending:
            future.cancel()
        return len(pending)

    # --- paho's callbacks: all on the loop's thread but the socket ones from `_connect` ---

    def _on_connect(self, _client: paho.Client, _userdata: Any, _flags: paho.ConnectFlags,
                    reason: ReasonCode, _properties: Properties | None) -> None:
        if self._connected.done():
            return
        if reason.is_failure:
            self._connected.set_exception(MqttError(f"the broker refused the connection:"
                                                    f" {reason}"))
        else:
            self._connected.set_result(None)

    def _on_disconnect(self, _client: paho.Client, _userdata: Any,
                       _flags: paho.DisconnectFlags, reason: ReasonCode,
                       _properties: Properties | None) -> None:
        self._end("disconnected" if not reason.is_failure else f"connection lost: {reason}")

    def _on_publish(self, _client: paho.Client, _userdata: Any, mid: int, reason: ReasonCode,
                    _properties: Properties) -> None:
        future = self._acks.pop(mid, None)
        if future is None or future.done():
            return
        if reason.is_failure:  # MQTT 5 only: 3.1.1 has no negative PUBACK
            future.set_exception(MqttError(f"the broker refused a publish: {reason}"))
        else:
            future.set_result(None)

    def _on_subscribe(self, _client: paho.Client, _userdata: Any, mid: int,
                      reasons: list[ReasonCode], _properties: Properties | None) -> None:
        future = self._subacks.pop(mid, None)
        if future is None or future.done():
            return
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            future.set_exception(MqttError(f"the broker refused the subscription: {refused}"))
        else:
            future.set_result(None)

    def _on_message(self, _client: paho.Client, _userdata: Any,
                    message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # paho passes a topic that is not UTF-8 on, raising here
            log.warning("mqtt.bad_topic")
            return
        self._inbox.put_nowait(Message(topic, bytes(message.payload), bool(message.retain)))

    def _on_socket_open(self, _client: paho.Client, _userdata: Any, sock: SocketLike) -> None:
        self._on_loop(self._watch, sock.fileno())

    def _on_socket_close(self, _client: paho.Client, _userdata: Any, _sock: SocketLike) -> None:
        self._on_loop(self._unwatch)

    def _on_socket_register_write(self, _client: paho.Client, _userdata: Any,
                                  _sock: SocketLike) -> None:
        self._on_loop(self._want_write, True)

    def _on_socket_unregister_write(self, _client: paho.Client, _userdata: Any,
                                    _sock: SocketLike) -> None:
        self._on_loop(self._want_write, False)

    def _on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            callback(*args)
        else:
            self._loop.call_soon_threadsafe(callback, *args)

    # --- the socket on the loop ---

    def _watch(self, fd: int) -> None:
        self._fd = fd
        self._loop.add_reader(fd, self._readable)
        self._housekeeping = self._loop.create_task(self._keep_alive(), name="mqtt-keepalive")

    def _unwatch(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = None
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None

    def _want_write(self, wanted: bool) -> None:
        if self._fd is None:
            return
        if wanted:
            self._loop.add_writer(self._fd, self._writable)
        else:
            self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        client = self._paho
        try:
            rc = client.loop_read()
            # TLS may hold decrypted bytes that no longer make the socket readable.
            while rc == paho.MQTT_ERR_SUCCESS:
                sock = client.socket()
                if not isinstance(sock, ssl.SSLSocket) or not sock.pending():
                    break
                rc = client.loop_read()
        except Exception as e:  # paho closes the socket on the errors it knows; not on these
            log.warning("mqtt.read_failed", error=repr(e))
            self._end(f"connection lost: {e!r}")
            self._close()

    def _writable(self) -> None:
        try:
            self._paho.loop_write()
        except Exception as e:
            log.warning("mqtt.write_failed", error=repr(e))
            self._end(f"connection lost: {e!r}")
            self._close()

    async def _keep_alive(self) -> None:
        # paho keeps the keepalive's time itself; it only asks to be called now and then.
        while self._paho.loop_misc() == paho.MQTT_ERR_SUCCESS:  # noqa: ASYNC110
            await asyncio.sleep(HOUSEKEEPING_S)


def make_client(
    settings: MqttConfig,
    *,
    client_id: str,
    will_topic: str,
    context: ssl.SSLContext | None,
) -> EventClient:
    """A client for one connection attempt, with `offline` as its retained will."""
    password = None if settings.password is None else settings.password.get_secret_value()
    return EventClient(
        settings.host,
        settings.port,
        client_id=client_id,
        will_topic=will_topic,
        keepalive_s=settings.keepalive_s,
        username=settings.username,
        password=password,
        context=context,
        timeout_s=min(CONNECT_TIMEOUT_S, float(settings.keepalive_s)),
    )


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
