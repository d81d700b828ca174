"""`Sync`: the daemon's one handle on the backend link (MQTT, HTTP, or MQTT with HTTP fallback).

It owns the outbox drain, the retained state and presence topics, inbound
config and remote commands. It reads only the journal (and writes acks,
config versions, audit and its one alarm to it); it never touches a lane, and a
lane never waits for it.

The alarm `sync.backend_unreachable` stands while the backend has been out of
reach for `sync.unreachable_alarm_s`: no MQTT session, or HTTP requests
failing, with no delivery acked in that time. The lanes do not need the
backend, so it is a warning; the events wait in the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from gateway.config import Settings
from gateway.core.clock import Clock
from gateway.core.events import ConfigSource, source_uri
from gateway.core.operations import LotControl
from gateway.core.records import Alarm
from gateway.drivers import AlarmLatch
from gateway.journal import Journal, JournalReader
from gateway.runtime.aio import Backoff, TaskSet, cancel_and_wait, first_of
from gateway.sync.commands import CommandHandler, Reply
from gateway.sync.drain import LinkLost, OutboxDrain, SyncStats
from gateway.sync.inbound import KINDS, ConfigInbox, FloodWatch, InboundQueue, to_the_end
from gateway.sync.mqtt import (
    PUBACK_TIMEOUT_S,
    EventClient,
    Message,
    MqttError,
    MqttSender,
    make_client,
    tls_context,
)
from gateway.sync.topics import Topics

if TYPE_CHECKING:
    # httpx is imported only where HTTP is used: a lot that syncs over MQTT never loads it.
    from gateway.sync.http import HttpBackend

log = structlog.get_logger(__name__)

INBOX_SIZE = 256  # inbound messages waiting for the handler; more are dropped and counted
SIGNED_INBOX_SIZE = 64  # signed commands waiting, in a lane of their own (InboundQueue)
RESEND_MAX = 100_000  # events one resend command may ask for
LINK_CHECK_S = 1.0  # how often the backend's reachability is judged
UNREACHABLE_ALARM = "sync.backend_unreachable"


class SyncConfigError(Exception):
    """The sync settings cannot be used (unreadable TLS files); the message says why."""


class Sync:
    """Run with `await sync.run()` (until cancelled); feed retained state with `publish_state`."""

    def __init__(self, settings: Settings, journal: Journal, clock: Clock,
                 control: LotControl, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.sync = settings.sync
        self.journal = journal
        self.clock = clock
        gw = settings.gateway
        self.topics = Topics(self.sync.topic_prefix, gw.lot_id, gw.gateway_id)
        self.source = source_uri(gw.lot_id, gw.gateway_id)
        self.client_id = self.sync.mqtt.client_id or f"parking-{gw.lot_id}-{gw.gateway_id}"
        self.drain = OutboxDrain(journal, batch_size=self.sync.batch_size,
                                 rate_per_s=self.sync.backlog_rate_per_s,
                                 burst=self.sync.backlog_burst)
        self.inbox = ConfigInbox(journal, clock)
        key = self.sync.command_hmac_key
        self.commands = CommandHandler(
            key=None if key is None else key.get_secret_value().encode(),
            journal=journal, clock=clock, control=control,
            window_s=self.sync.command_window_s, max_bytes=self.sync.max_command_bytes,
            replies=self.topics.replies, resend=self.resend, sync_status=self._status_dict)
        self.inbound = InboundQueue(INBOX_SIZE, SIGNED_INBOX_SIZE)  # outlives a connection
        self.flood = FloodWatch(self.inbound, journal, self.commands.report_dropped)
        self._rng = rng or random.Random()
        self._state: dict[str, bytes] = {}
        self._client: EventClient | None = None
        self._connected = False
        self._down_since = time.monotonic()
        self._reconnects = 0
        self._bad_messages = 0
        self._last_error: str | None = None
        self._tasks = TaskSet("sync")  # replies, resends, retained state: off the inbound loop
        self._alarms = AlarmLatch(journal, "sync")
        self._unreachable_since: float | None = None  # clock.monotonic(); None: reached
        self._http_task: asyncio.Task[None] | None = None
        self.connected_event = asyncio.Event()  # set while the MQTT link is up (for tests)

    # --- the API the daemon uses ---

    async def run(self) -> None:
        """Keep the link up until cancelled; on cancel say `offline` and disconnect cleanly."""
        await self.commands.load()
        self._unreachable_since = self.clock.monotonic()  # not reached yet
        watch = asyncio.create_task(self._watch_link(), name="sync-link-watch")
        try:
            if self.sync.transport == "http":
                await self._run_http()
            else:
                await self._run_mqtt()
        finally:
            await cancel_and_wait(watch)
            await self._tasks.cancel_and_wait()
            self._alarms.close()

    def publish_state(self, name: str, payload: Mapping[str, Any]) -> None:
        """Set a retained state document (occupancy, lanes, health); sent now if the link is
        up, and again after every reconnect. Never blocks and never raises on a link error."""
        if not name or "/" in name or "+" in name or "#" in name:
            raise ValueError(f"bad state name {name!r}")
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        if self._state.get(name) == body:
            return  # unchanged: no publish
        self._state[name] = body
        if self._client is not None and self._connected:
            self._tasks.spawn(self._publish_quietly(self.topics.state(name), body, retain=True))

    async def stats(self) -> SyncStats:
        return SyncStats(
            transport=self.sync.transport, connected=self._connected,
            last_seq=self.journal.last_seq, acked_through=self.journal.acked_through,
            backlog=self.journal.last_seq - self.journal.acked_through,
            lag_s=await self.drain.lag_s(lambda: self.clock.now().timestamp()),
            rate_per_s=self.drain.rate.current(), published=self.drain.published,
            acked=self.drain.acked, reconnects=self._reconnects,
            commands_accepted=self.commands.accepted, commands_rejected=self.commands.rejected,
            configs_applied=self.inbox.applied, configs_rejected=self.inbox.rejected,
            configs_ignored=self.inbox.ignored,
            bad_messages=self._bad_messages, inbound_dropped=self.inbound.dropped,
            last_error=self._last_error)

    async def resend(self, from_seq: int) -> dict[str, Any]:
        """Publish stored events from `from_seq` through `acked_through` again (a backend asked
        for them); what is not yet acked goes out anyway. Returns what will be sent."""
        client = self._client
        if client is None or not self._connected:
            return {"resent": 0, "reason": "not connected over MQTT"}
        upto = min(self.journal.acked_through, from_seq + RESEND_MAX - 1)
        self._tasks.spawn(self._resend(client, from_seq, upto))
        return {"fromSequence": from_seq, "throughSequence": upto}

    # --- MQTT ---

    async def _run_mqtt(self) -> None:
        mqtt = self.sync.mqtt
        context = None
        if mqtt.tls is not None:
            try:
                context = await asyncio.to_thread(tls_context, mqtt.tls)
            except (OSError, ssl.SSLError) as e:
                files = ", ".join(str(f) for f in (mqtt.tls.ca_file, mqtt.tls.cert_file,
                                                     mqtt.tls.key_file) if f is not None)
                raise SyncConfigError(f"cannot load the MQTT TLS files of sync.mqtt.tls"
                                      f" ({files or 'system CA'}): {e}") from None
        backoff = Backoff(self.sync.reconnect_min_s, self.sync.reconnect_max_s, self._rng)
        delays = backoff.delays()
        fallback: asyncio.Task[None] | None = None
        if self._fallback_enabled():
            fallback = asyncio.create_task(self._fallback_loop(), name="sync-http-fallback")
        try:
            while True:
                client = make_client(mqtt, client_id=self.client_id,
                                     will_topic=self.topics.presence, context=context)
                was_up = False
                try:
                    await self._session(client)
                except MqttError as e:
                    was_up = self._link_down(str(e))
                except LinkLost as e:
                    was_up = self._link_down(f"publish failed: {e}")
                if was_up:  # the link worked: the first retry is at the base again
                    delays = backoff.delays()
                delay = next(delays)
                log.info("sync.reconnect_in", seconds=round(delay, 2))
                await asyncio.sleep(delay)
        finally:
            if fallback is not None:
                await cancel_and_wait(fallback)

    def _link_down(self, error: str) -> bool:
        """Note the link lost; whether it had been up (online, subscribed) this session."""
        was_up = self._connected
        if was_up:
            self._down_since = time.monotonic()
            self._reconnects += 1
        self._connected = False
        self._client = None
        self.connected_event.clear()
        self._last_error = error
        self._backend_lost()
        log.warning("sync.mqtt_down", error=error, host=self.sync.mqtt.host,
                    port=self.sync.mqtt.port)
        return was_up

    async def _session(self, client: EventClient) -> None:
        async with client:
            sender = MqttSender(client, self.topics.events, self.source,
                                self.sync.inflight_window, self.sync.events_per_message)
            try:
                await client.publish(self.topics.presence, b"online", qos=1, retain=True,
                                     timeout=PUBACK_TIMEOUT_S)
                for name, body in list(self._state.items()):
                    await client.publish(self.topics.state(name), body, qos=1, retain=True,
                                         timeout=PUBACK_TIMEOUT_S)
                await client.subscribe(self.topics.config_filter, qos=1)
                await client.subscribe(self.topics.commands, qos=1)
                self._client = client
                self._connected = True
                self.connected_event.set()
                self._backend_reached()
                log.info("sync.mqtt_up", host=self.sync.mqtt.host, port=self.sync.mqtt.port,
                         client_id=self.client_id, tls=self.sync.mqtt.tls is not None)
                await self._stop_fallback()
                await self._serve(client, sender)
            except (MqttError, LinkLost):
                raise
            except BaseException:
                # Shutting down: say so while the link is still up (the will covers a crash).
                with contextlib.suppress(MqttError):
                    await client.publish(self.topics.presence, b"offline", qos=1, retain=True,
                                         timeout=2)
                raise
            finally:
                await sender.close()

    async def _serve(self, client: EventClient, sender: MqttSender) -> None:
        """Drain and take inbound messages until the link fails (raises its first error).

        Inbound messages wait in `self.inbound`, which outlives the link: what arrived and was
        not handled when it failed is handled after the reconnect.
        """
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.drain.run(sender), name="sync-drain")
                tg.create_task(self._receive(client), name="sync-receive")
                tg.create_task(self._handle_inbound(client), name="sync-inbound")
                tg.create_task(self.flood.run(), name="sync-flood-watch")
        except BaseExceptionGroup as group:
            if (lost := first_of(group, (MqttError, LinkLost))) is not None:
                raise lost from None
            raise
        finally:
            for message in client.take_unread():
                self._route(message)

    async def _receive(self, client: EventClient) -> None:
        async for message in client.messages:  # raises MqttError when the link drops
            self._route(message)

    def _route(self, message: Message) -> None:
        """Queue a message; a command is screened first, so a signed one goes ahead of junk."""
        if message.topic == self.topics.commands:
            self.inbound.put(message, self.commands.screen(message.payload))
        elif self.topics.config_kind(message.topic) is not None:
            self.inbound.put(message)
        else:
            self._bad_messages += 1

    async def _handle_inbound(self, client: EventClient) -> None:
        while True:
            message = await self.inbound.get()
            await to_the_end(self._handle(client, message))  # the link may fail meanwhile

    async def _handle(self, client: EventClient, message: Message) -> None:
        topic, raw = message.topic, message.payload
        try:
            if topic == self.topics.commands:
                reply = await self.commands.handle(raw)
                self._tasks.spawn(self._reply(client, reply))
            elif (kind := self.topics.config_kind(topic)) is not None and raw:
                # (an empty retained message clears the topic: nothing to apply)
                await self.inbox.apply(kind, raw, "mqtt")
        except Exception:  # a journal failure: counted, logged, the loop lives
            self._bad_messages += 1
            log.exception("sync.inbound_failed", topic=topic)

    async def _reply(self, client: EventClient, reply: Reply) -> None:
        topic = reply.topic or self.topics.replies
        body = json.dumps(reply.payload, separators=(",", ":"), default=str).encode()
        with contextlib.suppress(MqttError):
            await client.publish(topic, body, qos=1, timeout=PUBACK_TIMEOUT_S)

    async def _publish_quietly(self, topic: str, body: bytes, *, retain: bool) -> None:
        client = self._client
        if client is None:
            return
        with contextlib.suppress(MqttError):
            await client.publish(topic, body, qos=1, retain=retain, timeout=PUBACK_TIMEOUT_S)

    async def _resend(self, client: EventClient, first: int, last: int) -> None:
        reader = await JournalReader.open(self.journal.path)
        sent = 0
        try:
            async for record in reader.iter_events(after=first - 1):
                if record.seq > last:
                    break
                await client.publish(self.topics.events, record.to_json(self.source), qos=1,
                                     timeout=PUBACK_TIMEOUT_S)
                sent += 1
        except MqttError as e:
            log.warning("sync.resend_interrupted", sent=sent, error=str(e))
        finally:
            await reader.close()
        log.info("sync.resent", first=first, last=last, sent=sent)

    # --- HTTP ---

    def _fallback_enabled(self) -> bool:
        return (self.sync.http_fallback_after_s is not None
                and self.sync.http.base_url is not None)

    async def _run_http(self) -> None:
        """HTTP as the transport (primary, or the fallback): drain and pull config."""
        from gateway.sync.http import HttpBackend

        async with (HttpBackend(self.sync.http, self.settings.gateway.gateway_id) as backend,
                    asyncio.TaskGroup() as tg):
            tg.create_task(self._http_drain(backend))
            tg.create_task(self._http_config(backend))

    async def _http_drain(self, backend: HttpBackend) -> None:
        from gateway.sync.http import HttpSender

        delays = Backoff(self.sync.reconnect_min_s, self.sync.reconnect_max_s,
                         self._rng).delays()
        while True:
            try:
                await self.drain.run(HttpSender(backend, self.source))
            except LinkLost as e:
                self._last_error = str(e)
                self._backend_lost()
                log.warning("sync.http_down", error=str(e))
                await asyncio.sleep(next(delays))

    async def _http_config(self, backend: HttpBackend) -> None:
        while True:
            await self.pull_config(backend)
            await asyncio.sleep(self.sync.config_poll_s)

    async def pull_config(self, backend: HttpBackend) -> None:
        """Pull every config kind once (ETag: unchanged kinds cost a 304)."""
        from gateway.sync.http import HttpSyncError

        source: ConfigSource = "http"
        for kind in KINDS:
            try:
                pulled = await backend.pull_config(kind)
            except HttpSyncError as e:
                self._last_error = str(e)
                self._backend_lost()
                log.warning("sync.config_pull_failed", kind=kind, error=str(e))
                continue
            self._backend_reached()
            if pulled is not None:
                await self.inbox.apply(kind, pulled.body, source)

    async def _fallback_loop(self) -> None:
        """While MQTT has been down longer than the configured time, drain over HTTP."""
        assert self.sync.http_fallback_after_s is not None
        while True:
            await asyncio.sleep(1.0)
            down_for = time.monotonic() - self._down_since
            if self._connected or down_for < self.sync.http_fallback_after_s:
                continue
            log.warning("sync.http_fallback", mqtt_down_s=round(down_for, 1))
            task = self._http_task = asyncio.create_task(self._run_http())
            try:
                await asyncio.wait([task])  # ends when MQTT is back (or HTTP fails)
            except asyncio.CancelledError:
                task.cancel()
                await asyncio.wait([task])
                raise
            if not task.cancelled() and task.exception() is not None:
                self._last_error = repr(task.exception())
                log.error("sync.http_fallback_failed", error=repr(task.exception()))
    async def _stop_fallback(self) -> None:
        task = self._http_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # our own cancellation still propagates
            log.info("sync.http_fallback_ended")

    # --- the backend's reachability ---

    def _backend_reached(self) -> None:
        self._unreachable_since = None
        self._alarms.clear(UNREACHABLE_ALARM, "the backend is reachable again")

    def _backend_lost(self) -> None:
        if self._unreachable_since is None:
            self._unreachable_since = self.clock.monotonic()

    async def _watch_link(self) -> None:
        """Judge the backend's reachability every `LINK_CHECK_S`; an ack is proof of it."""
        acked = self.drain.acked
        while True:
            if self.drain.acked != acked:
                acked = self.drain.acked
                self._backend_reached()
            self._check_link()
            await asyncio.sleep(LINK_CHECK_S)

    def _check_link(self) -> None:
        since, after_s = self._unreachable_since, self.sync.unreachable_alarm_s
        if since is None or self.clock.monotonic() - since < after_s:
            return
        backlog = self.journal.last_seq - self.journal.acked_through
        target = (f"{self.sync.http.base_url}" if self.sync.transport == "http"
                  else f"MQTT broker {self.sync.mqtt.host}:{self.sync.mqtt.port}")
        self._alarms.set(Alarm(
            UNREACHABLE_ALARM, "warning",
            f"backend unreachable for over {after_s:g} s ({target}: {self._last_error});"
            f" {backlog} events wait in the journal, none is lost",
            {"transport": self.sync.transport, "error": self._last_error or "",
             "backlog": backlog}, component="sync"))

    # --- helpers ---

    async def _status_dict(self) -> dict[str, Any]:
        stats = await self.stats()
        return {k: getattr(stats, k) for k in stats.__dataclass_fields__}
