"""The central backend, simulated: what the gateway's sync side talks to in tests and the demo.

It subscribes like the real backend (`<prefix>/+/+/events` at QoS 1, plus
presence and state), keeps every event once by (source, sequence), counts the
duplicates, and shows gaps. It serves the REST ingest
(`POST /v1/gateways/{id}/events`, idempotent by event id) and the config
documents (`GET`/`PUT /v1/gateways/{id}/config/{kind}` with ETags) over a
small HTTP/1.1 server of its own. It can push config on retained topics and
send signed commands, collecting the replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.sync.commands import signed_command

MAX_BODY = 16 * 1024 * 1024


@dataclass
class Received:
    """Per source: the arrival order (duplicates included) and what was new."""

    arrivals: list[int] = field(default_factory=list)
    duplicates: int = 0
    stored: int = 0  # distinct events


class BackendSim:
    def __init__(self, *, mqtt_host: str = "127.0.0.1", mqtt_port: int | None = None,
                 prefix: str = "parking/v1", db_path: Path | None = None,
                 http_port: int | None = None, client_id: str = "backend-sim") -> None:
        self.client_id = client_id
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port
        self.prefix = prefix
        self.http_port = http_port
        self.db = sqlite3.connect(":memory:" if db_path is None else str(db_path))
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS events (source TEXT NOT NULL, seq INTEGER NOT NULL,"
            " id TEXT NOT NULL UNIQUE, type TEXT NOT NULL, body TEXT NOT NULL, via TEXT NOT NULL,"
            " PRIMARY KEY (source, seq));")
        self.received: dict[str, Received] = {}
        self.invalid = 0
        self.presence: dict[str, str] = {}
        self.state: dict[str, Any] = {}
        self.replies: list[dict[str, Any]] = []
        self.config: dict[tuple[str, str], bytes] = {}  # (gateway id, kind) -> document
        self.http_requests: list[tuple[str, str, int]] = []  # method, path, status
        self._client: aiomqtt.Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()
        self.ready = asyncio.Event()

    # --- lifecycle ---

    async def start(self) -> None:
        if self.mqtt_port is not None:
            self._tasks.append(asyncio.create_task(self._mqtt_loop(), name="backend-mqtt"))
        if self.http_port is not None:
            self._server = await asyncio.start_server(self._http, "127.0.0.1", self.http_port)
        if self.mqtt_port is None:
            self.ready.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # The store stays readable after stop(), for the tests' checks.

    async def __aenter__(self) -> BackendSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- storing events ---

    def ingest(self, event: Any, via: str) -> str:
        """Store one CloudEvent: `new`, `duplicate` or `invalid`."""
        try:
            source, seq, event_id = event["source"], event["seq"], event["id"]
            if not (isinstance(source, str) and isinstance(seq, int) and isinstance(event_id, str)):
                raise TypeError
        except (KeyError, TypeError):
            self.invalid += 1
            return "invalid"
        got = self.received.setdefault(source, Received())
        got.arrivals.append(seq)
        try:
            with self.db:
                self.db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
                                (source, seq, event_id, str(event.get("type")),
                                 json.dumps(event), via))
        except sqlite3.IntegrityError:
            got.duplicates += 1
            return "duplicate"
        finally:
            self._changed.set()
        got.stored += 1
        return "new"

    def sequences(self, source: str) -> list[int]:
        rows = self.db.execute("SELECT seq FROM events WHERE source = ? ORDER BY seq", (source,))
        return [int(r[0]) for r in rows]

    def events(self, source: str) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT body FROM events WHERE source = ? ORDER BY seq", (source,))
        return [json.loads(r[0]) for r in rows]

    def gaps(self, source: str) -> list[tuple[int, int]]:
        """Missing sequence ranges below the highest seen (the gateway still has them)."""
        out: list[tuple[int, int]] = []
        expected = 1
        for seq in self.sequences(source):
            if seq > expected:
                out.append((expected, seq - 1))
            expected = seq + 1
        return out

    def count(self, source: str) -> int:
        """Distinct events stored for `source`."""
        got = self.received.get(source)
        return 0 if got is None else got.stored

    async def wait_for(self, source: str, count: int, within: float = 30.0) -> None:
        """Until `count` distinct events of `source` are stored."""
        async with asyncio.timeout(within):
            while self.count(source) < count:
                self._changed.clear()
                await self._changed.wait()

    # --- MQTT ---

    async def _mqtt_loop(self) -> None:
        assert self.mqtt_port is not None
        while True:
            try:
                # A persistent session: what the gateway publishes while the backend is
                # away is queued for it by the broker.
                async with aiomqtt.Client(self.mqtt_host, self.mqtt_port,
                                          identifier=self.client_id,
                                          clean_session=False) as client:
                    await client.subscribe(f"{self.prefix}/+/+/events", qos=1)
                    await client.subscribe(f"{self.prefix}/+/+/presence", qos=1)
                    await client.subscribe(f"{self.prefix}/+/+/state/+", qos=1)
                    await client.subscribe(f"{self.prefix}/+/+/replies/#", qos=1)
                    await client.subscribe(f"{self.prefix}/+/+/replies", qos=1)
                    self._client = client
                    self.ready.set()
                    async for message in client.messages:
                        self._on_message(str(message.topic), message.payload)
            except aiomqtt.MqttError:
                self._client = None
                self.ready.clear()
                await asyncio.sleep(0.1)

    def _on_message(self, topic: str, payload: Any) -> None:
        raw = payload if isinstance(payload, bytes | bytearray) else str(payload or "").encode()
        parts = topic.split("/")
        tail = parts[len(self.prefix.split("/")) + 2:]
        gateway = "/".join(parts[len(self.prefix.split("/")):][:2])
        if tail == ["events"]:
            try:
                body = json.loads(raw)
            except ValueError:
                self.invalid += 1
                return
            # One structured-mode CloudEvent, or a batch of them (a JSON array) from a drain.
            for event in body if isinstance(body, list) else [body]:
                self.ingest(event, "mqtt")
        elif tail == ["presence"]:
            self.presence[gateway] = raw.decode(errors="replace")
        elif tail[:1] == ["state"] and len(tail) == 2:
            self.state[f"{gateway}/{tail[1]}"] = json.loads(raw) if raw else None
        elif tail[:1] == ["replies"]:
            self.replies.append(json.loads(raw))
            self._changed.set()

    async def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        await asyncio.wait_for(self.ready.wait(), 10)
        assert self._client is not None
        await self._client.publish(topic, payload, qos=1, retain=retain)

    async def push_config(self, lot: str, gateway: str, kind: str, version: int,
                          data: Any) -> None:
        """Publish a config document on its retained topic."""
        body = json.dumps({"version": version, "data": data}).encode()
        await self._publish(f"{self.prefix}/{lot}/{gateway}/config/{kind}", body, retain=True)

    async def push_raw(self, topic: str, payload: bytes, retain: bool = False) -> None:
        await self._publish(topic, payload, retain)

    async def send_command(self, lot: str, gateway: str, key: bytes,
                           command: Mapping[str, Any]) -> None:
        await self._publish(f"{self.prefix}/{lot}/{gateway}/commands",
                            signed_command(key, command))

    async def wait_reply(self, command_id: str, within: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                for reply in self.replies:
                    if reply.get("commandId") == command_id:
                        return reply
                self._changed.clear()
                await self._changed.wait()

    # --- HTTP ---

    def set_config(self, gateway: str, kind: str, version: int, data: Any) -> None:
        self.config[(gateway, kind)] = json.dumps({"version": version, "data": data}).encode()

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                method, path, _ = request_line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                if length > MAX_BODY:
                    await _respond(writer, 413, b"")
                    return
                body = await reader.readexactly(length) if length else b""
                status, extra, out = self._route(method, path, headers, body)
                self.http_requests.append((method, path, status))
                await _respond(writer, status, out, extra)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _route(self, method: str, path: str, headers: Mapping[str, str], body: bytes
               ) -> tuple[int, dict[str, str], bytes]:
        parts = path.split("?")[0].strip("/").split("/")
        if parts[:2] != ["v1", "gateways"] or len(parts) < 4:
            return 404, {}, b""
        gateway = parts[2]
        if parts[3] == "events" and method == "POST":
            try:
                batch = json.loads(body)
            except ValueError:
                return 400, {}, b'{"error":"not JSON"}'
            if not isinstance(batch, list):
                return 400, {}, b'{"error":"a batch is a JSON array"}'
            outcomes = [self._ingest_http(e) for e in batch]
            result = {k: outcomes.count(k) for k in ("new", "duplicate", "invalid")}
            return 200, {"Content-Type": "application/json"}, json.dumps(result).encode()
        if parts[3] == "config" and len(parts) == 5:
            key = (gateway, parts[4])
            if method == "PUT":
                self.config[key] = body
                return 204, {}, b""
            if method == "GET":
                doc = self.config.get(key)
                if doc is None:
                    return 404, {}, b""
                etag = '"' + hashlib.sha256(doc).hexdigest()[:16] + '"'
                if headers.get("if-none-match") == etag:
                    return 304, {"ETag": etag}, b""
                return 200, {"ETag": etag, "Content-Type": "application/json"}, doc
        return 405, {}, b""

    def _ingest_http(self, event: Any) -> str:
        # Idempotent by event id: the same id again is a duplicate, whatever its sequence.
        if isinstance(event, dict) and isinstance(event.get("id"), str):
            row = self.db.execute("SELECT 1 FROM events WHERE id = ?", (event["id"],)).fetchone()
            if row is not None:
                got = self.received.setdefault(str(event.get("source")), Received())
                got.arrivals.append(int(event.get("seq", 0)))
                got.duplicates += 1
                return "duplicate"
        return self.ingest(event, "http")


_REASONS = {200: "OK", 204: "No Content", 304: "Not Modified", 400: "Bad Request",
            404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}


async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes,
                   headers: Mapping[str, str] | None = None) -> None:
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
