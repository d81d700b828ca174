"""The HTTP side (httpx): the backend's REST ingest, and config pulled with ETags.

`POST /v1/gateways/{id}/events` takes a batch of CloudEvents
(`application/cloudevents-batch+json`) and is idempotent by event id, so a
retried batch does no harm. `GET /v1/gateways/{id}/config/{kind}` answers 304
while the ETag still matches. Every request has a timeout; transient failures
(connection errors, 5xx, 408, 429) are retried with jittered backoff.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import structlog

from gateway.config import HttpConfig
from gateway.journal import OutboxRecord
from gateway.runtime.aio import Backoff

log = structlog.get_logger(__name__)

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class HttpSyncError(Exception):
    """The backend could not be reached, or refused the request; the message says why."""


@dataclass(frozen=True, slots=True)
class Pulled:
    body: bytes
    etag: str | None


class HttpBackend:
    """One gateway's REST client. Use as an async context manager, or call `close()`."""

    def __init__(self, settings: HttpConfig, gateway_id: str, *, attempts: int = 4,
                 backoff_s: float = 0.5, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        if settings.base_url is None:
            raise HttpSyncError("sync.http.base_url is not set")
        headers = {"User-Agent": "parking-gateway"}
        if settings.token is not None:
            headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
        self._client = httpx.AsyncClient(
            base_url=str(settings.base_url).rstrip("/"), headers=headers,
            timeout=httpx.Timeout(settings.timeout_s), transport=transport)
        self._gateway = gateway_id
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._etags: dict[str, str] = {}

    async def close(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> HttpBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        delays = Backoff(self._backoff_s, self._backoff_s * 16, random.Random()).delays()
        last = ""
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(next(delays))
            try:
                response = await self._client.request(method, url, **kwargs)  # type: ignore[arg-type]
            except httpx.HTTPError as e:  # connection refused, timeout, protocol error
                last = f"{type(e).__name__}: {e}"
                log.warning("sync.http_retry", url=url, attempt=attempt + 1, error=last)
                continue
            if response.status_code in RETRY_STATUS:
                last = f"HTTP {response.status_code}"
                log.warning("sync.http_retry", url=url, attempt=attempt + 1, status=last)
                continue
            return response
        raise HttpSyncError(f"{method} {url} failed after {self._attempts} attempts: {last}")

    async def post_events(self, records: Sequence[OutboxRecord], source: str) -> None:
        """Deliver a batch; returns once the backend has stored it (2xx)."""
        body = "[" + ",".join(r.to_json(source) for r in records) + "]"
        url = f"/v1/gateways/{self._gateway}/events"
        response = await self._request("POST", url, content=body.encode(),
                                       headers={"Content-Type": BATCH_CONTENT_TYPE})
        if not response.is_success:
            raise HttpSyncError(f"backend refused events {records[0].seq}..{records[-1].seq}:"
                                f" HTTP {response.status_code} {response.text[:200]}")

    async def pull_config(self, kind: str) -> Pulled | None:
        """The kind's current document, or None when unchanged since the last pull (304)."""
        url = f"/v1/gateways/{self._gateway}/config/{kind}"
        headers = {"If-None-Match": self._etags[kind]} if kind in self._etags else {}
        response = await self._request("GET", url, headers=headers)
        if response.status_code in (304, 404):
            return None
        if not response.is_success:
            raise HttpSyncError(f"GET {url}: HTTP {response.status_code}")
        etag = response.headers.get("ETag")
        if etag:
            self._etags[kind] = etag
        return Pulled(response.content, etag)


class HttpSender:
    """The drain's sender over HTTP: one batch in flight, acknowledged by the 2xx."""

    def __init__(self, backend: HttpBackend, source: str) -> None:
        self._backend = backend
        self._source = source

    async def send(self, batch: Sequence[OutboxRecord]) -> list[asyncio.Future[None]]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            await self._backend.post_events(batch, self._source)
        except HttpSyncError as e:
            done.set_exception(e)
        else:
            done.set_result(None)
        return [done] * len(batch)
