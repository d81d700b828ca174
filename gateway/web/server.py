"""The local HTTP server: aiohttp on `http.listen` (127.0.0.1:8080 by default), TLS from files
when configured, serving the routes of `routes.py` behind the roles of `auth.py`, the web
console's page and files among them (`console.py`).

It runs as a supervised part of the daemon (`run()`): a port in use or unreadable TLS files
fail the part, which the supervisor alarms and retries. It knows the lot through
:class:`~gateway.web.lot.LotView` and the availability through the feed; the technician's
actions go through `LotControl`, audited as `http:<account>`.

Bounds: a request body is at most `http.max_body_bytes`; at most `http.max_stream_clients`
live streams, each sent only the newest document and dropped when it does not read for
`WRITE_TIMEOUT_S`; failed logins are limited (auth.py). Nothing secret is logged: not a
password, token, cookie or CSRF token, and no request body but an action's parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import ValidationError

from gateway.config import HttpServerConfig
from gateway.core.availability import BAY_TYPES, Availability, Where
from gateway.core.operations import OperationRefused
from gateway.core.pay import PaymentRequest, PayOnFoot, PayRefused
from gateway.runtime.aio import TaskSet
from gateway.web.auth import Authenticator, Identity, TooManyFailures, Unauthenticated
from gateway.web.console import ASSETS, PAGE, PAGE_POLICY, asset, bays_document
from gateway.web.live import AvailabilityFeed
from gateway.web.lot import LotView
from gateway.web.metrics import CONTENT_TYPE, Metrics, Snapshot
from gateway.web.openapi import document
from gateway.web.routes import (
    BY_NAME,
    EVENTS_PAGE_DEFAULT,
    EVENTS_PAGE_MAX,
    PLATES_DEFAULT,
    PLATES_MAX,
    ROUTES,
    BayServiceSet,
    Body,
    GateOpen,
    LaneModeSet,
    Login,
    LotStateSet,
    Payment,
)
from gateway.web.today import TodayReport

log = structlog.get_logger(__name__)

COOKIE = "pgw_session"
CSRF_HEADER = "X-CSRF-Token"
KEEPALIVE_S = 15.0  # a comment line on a quiet stream, so proxies and browsers keep it
HANGUP_CHECK_S = 1.0  # how soon a stream whose client has gone frees its place
WRITE_TIMEOUT_S = 5.0  # a stream client that reads nothing this long is dropped
SHUTDOWN_S = 2.0  # requests under way when the server stops get this long
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_CACHED_VIEWS = 64  # availability documents kept for the filters asked since the last change
IDENTITY = web.RequestKey("identity", Identity)  # who the guard found the caller to be

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
B = TypeVar("B", bound=Body)


class HttpTlsError(Exception):
    """The TLS files of `[http.tls]` cannot be used; the message says why."""


class HttpError(Exception):
    """An answer other than 200: the status, a code and a message for the caller."""

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.headers = status, code, dict(headers or {})


class WebServer:
    """Run with `await server.run()` (until cancelled); `port` is the bound port once
    `listening` is set."""

    def __init__(self, lot: LotView, config: HttpServerConfig, feed: AvailabilityFeed, *,
                 pay: PayOnFoot | None = None) -> None:
        self.lot = lot
        self.pay = pay  # the pay-on-foot desk; None: the pay routes answer 503
        self.config = config
        self.feed = feed
        self.auth = Authenticator(config)
        self.metrics = Metrics()
        self.port: int | None = None
        self.listening = asyncio.Event()
        self._streams = TaskSet("http.streams")
        self._documents_of: Availability | None = None
        self._documents: dict[Where, tuple[dict[str, Any], bytes]] = {}
        self._openapi = document()
        self.today = TodayReport(lot)
        self._handlers: dict[str, Handler] = {
            "console": self._console, "static": self._static, "bays": self._bays,
            "plates_recent": self._plates_recent, "sync": self._sync,
            "report_today": self._report_today, "healthz": self._healthz,
            "readyz": self._readyz, "metrics": self._metrics,
            "openapi": self._openapi_json, "login": self._login, "logout": self._logout,
            "session": self._session, "availability": self._availability,
            "availability_stream": self._availability_stream, "lanes": self._lanes,
            "alarms": self._alarms, "sessions": self._sessions, "events": self._events,
            "gate_open": self._gate_open, "lane_mode": self._lane_mode,
            "lot_state": self._lot_state, "bay_service": self._bay_service,
            "alarm_ack": self._alarm_ack, "pay_fee": self._pay_fee,
            "pay_payment": self._pay_payment,
        }

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard],
                              client_max_size=self.config.max_body_bytes)
        for route in ROUTES:
            app.router.add_route(route.method, route.path, self._handlers[route.name],
                                 name=route.name)
        app.on_response_prepare.append(_security_headers)
        return app

    async def run(self) -> None:
        """Listen and serve until cancelled; then end the streams and the requests under way."""
        context = None
        if self.config.tls is not None:
            context = await asyncio.to_thread(_tls_context, self.config)
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=SHUTDOWN_S)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port, ssl_context=context)
            await site.start()
            self.port = runner.addresses[0][1]
            log.info("http.listening", host=self.config.host, port=self.port,
                     tls=context is not None, accounts=len(self.config.accounts),
                     anonymous_viewer=self.config.anonymous_viewer)
            self.listening.set()
            await asyncio.Future()  # serve until cancelled
        finally:
            self.listening.clear()
            await self._streams.cancel_and_wait()
            await runner.cleanup()
            log.info("http.closed", host=self.config.host, port=self.port)

    # --- who is asking ---

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Authenticate and authorise by the route's permission; answer errors as JSON."""
        route = BY_NAME.get(request.match_info.route.name or "")
        try:
            if route is not None and route.allow is not None:
                identity = await self._identify(request)
                if not identity.may(route.allow):
                    raise HttpError(403, "forbidden",
                                    f"the {identity.role} role may not do this")
                if request.method not in SAFE_METHODS and identity.session is not None and (
                        not hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(),
                                                identity.session.csrf.encode())):
                    raise HttpError(403, "forbidden",
                                    f"an action needs the session's {CSRF_HEADER} header")
                request[IDENTITY] = identity
            return await handler(request)
        except HttpError as e:
            return _error(e.status, e.code, str(e), e.headers)
        except web.HTTPException as e:  # no such route, a body too large
            return _error(e.status, _CODES.get(e.status, "bad_request"), e.reason,
                          {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None)
        except OperationRefused as e:
            return _error(409, "refused", str(e))
        except Exception:
            log.exception("http.request_failed", route=route.name if route else None)
            return _error(500, "internal",
                          "the daemon failed to do this; see its log (journalctl -u"
                          " parking-gateway)")

    async def _identify(self, request: web.Request) -> Identity:
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _unauthenticated("use Authorization: Bearer <token>")
            try:
                return await self.auth.by_token(token.strip(), _address(request))
            except TooManyFailures as e:
                raise _too_many(e) from None
            except Unauthenticated:
                log.warning("http.token_refused", address=_address(request))
                raise _unauthenticated("unknown or wrong API token") from None
        cookie = request.cookies.get(COOKIE)
        if cookie and (identity := self.auth.by_cookie(cookie)) is not None:
            return identity
        if self.auth.anonymous is not None:
            return self.auth.anonymous
        raise _unauthenticated("log in, or send Authorization: Bearer <token>")

    async def _login(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request, Login)
        address = _address(request)
        try:
            session = await self.auth.login(body.user, body.password, address)
        except TooManyFailures as e:
            log.warning("http.login_refused", address=address, account=body.user)
            raise _too_many(e) from None
        except Unauthenticated as e:
            log.warning("http.login_failed", address=address, account=body.user)
            raise HttpError(401, "unauthenticated", str(e)) from None
        log.info("http.login", account=session.account, role=session.role, address=address)
        response = _json({"account": session.account, "role": session.role,
                          "csrfToken": session.csrf})
        response.set_cookie(COOKIE, session.id, httponly=True, samesite="Strict", path="/",
                            secure=self.config.tls is not None,
                            max_age=int(self.config.session_max_age_s))
        return response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        if cookie := request.cookies.get(COOKIE):
            self.auth.logout(cookie)
        response = _json({"ok": True})
        response.del_cookie(COOKIE, path="/")
        return response

    async def _session(self, request: web.Request) -> web.StreamResponse:
        identity: Identity = request[IDENTITY]
        answer: dict[str, Any] = {"account": identity.account, "role": identity.role}
        if identity.session is not None:
            answer["csrfToken"] = identity.session.csrf
        return _json(answer)

    # --- health ---

    async def _healthz(self, _request: web.Request) -> web.StreamResponse:
        return _json({"status": "alive"})

    async def _readyz(self, _request: web.Request) -> web.StreamResponse:
        checks = self.lot.readiness()
        ready = all(checks.values())
        return _json({"ready": ready, "checks": checks}, 200 if ready else 503)

    async def _metrics(self, _request: web.Request) -> web.StreamResponse:
        snapshot = Snapshot(await self.lot.status(), self.lot.reader_stats(), self.feed.current)
        return web.Response(body=self.metrics.render(snapshot),
                            headers={"Content-Type": CONTENT_TYPE})

    async def _openapi_json(self, _request: web.Request) -> web.StreamResponse:
        return _json(self._openapi)

    # --- availability ---

    def _where(self, request: web.Request) -> Where:
        """The filters of a request, checked against the lot."""
        query = request.query
        unknown = set(query) - {"floor", "zone", "type"}
        if unknown:
            raise HttpError(400, "invalid_params",
                            f"unknown parameter {sorted(unknown)[0]!r} (floor, zone, type)")
        where = Where(query.get("floor"), query.get("zone"), query.get("type"))
        if where.bay_type is not None and where.bay_type not in BAY_TYPES:
            raise HttpError(400, "invalid_params",
                            f"type must be one of {', '.join(BAY_TYPES)}")
        current = self.feed.current
        if current is None:
            raise HttpError(503, "unavailable", "the lot's availability is not known yet",
                            {"Retry-After": "1"})
        if where and not current.has(where):
            names = current.names()
            asked = ", ".join(f"{k}={v}" for k, v in
                              (("floor", where.floor), ("zone", where.zone),
                               ("type", where.bay_type)) if v is not None)
            known = "; ".join(f"{k}: {', '.join(v)}" for k, v in names.items())
            raise HttpError(404, "not_found", f"no bay where {asked} (the lot has {known})")
        return where

    def _document(self, now: Availability, where: Where) -> tuple[dict[str, Any], bytes]:
        """`now`'s document for `where`, and its JSON: made once per change and filter, not
        once per request or stream client."""
        if self._documents_of is not now:
            self._documents_of, self._documents = now, {}
        made = self._documents.get(where)
        if made is None:
            if len(self._documents) >= MAX_CACHED_VIEWS:
                self._documents.clear()
            doc = now.document(where)
            made = self._documents[where] = doc, _dumps(doc).encode()
        return made

    async def _availability(self, request: web.Request) -> web.StreamResponse:
        where = self._where(request)
        assert self.feed.current is not None  # _where answered 503 otherwise
        _, body = self._document(self.feed.current, where)
        return web.Response(body=body, content_type="application/json")

    async def _availability_stream(self, request: web.Request) -> web.StreamResponse:
        """The document now, then each change of what the filters show (Server-Sent Events)."""
        where = self._where(request)
        if len(self._streams) >= self.config.max_stream_clients:
            raise HttpError(503, "unavailable", "too many live streams; try again later",
                            {"Retry-After": "10"})
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no"})
        await response.prepare(request)
        revision = self.feed.revision - 1  # the current document first
        shown: dict[str, Any] | None = None
        quiet_since = time.monotonic()
        try:
            while not _hung_up(request):
                now = await self.feed.wait_after(revision, HANGUP_CHECK_S)
                if now is None:
                    if time.monotonic() - quiet_since >= KEEPALIVE_S:
                        await self._send(response, b": keep-alive\n\n")
                        quiet_since = time.monotonic()
                    continue
                revision = self.feed.revision
                doc, body = self._document(now, where)
                counts = {k: v for k, v in doc.items() if k != "recordDateTime"}
                if counts == shown:
                    continue  # a change elsewhere in the lot
                shown = counts
                await self._send(response, f"id: {revision}\nevent: availability\ndata: "
                                 .encode() + body + b"\n\n")
                quiet_since = time.monotonic()
        except (ConnectionError, TimeoutError):
            pass  # gone, or dropped for not reading
        return response

    async def _send(self, response: web.StreamResponse, data: bytes) -> None:
        try:
            await asyncio.wait_for(response.write(data), WRITE_TIMEOUT_S)
        except TimeoutError:
            log.warning("http.stream_client_not_reading", timeout_s=WRITE_TIMEOUT_S)
            raise

    # --- the console ---

    async def _console(self, _request: web.Request) -> web.StreamResponse:
        response = _file(PAGE)
        response.headers["Content-Security-Policy"] = PAGE_POLICY
        return response

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        if name not in ASSETS:
            raise HttpError(404, "not_found", f"the console has no file {name!r}")
        return _file(name)

    async def _bays(self, _request: web.Request) -> web.StreamResponse:
        lot = self.lot
        return _json(bays_document(lot.settings.bays, lot.sensor_states()["bays"],
                                   inside=lot.vehicles_uncounted(), at=lot.clock.now()))

    async def _report_today(self, _request: web.Request) -> web.StreamResponse:
        return _json((await self.today.report()).as_dict())

    # --- reads ---

    async def _plates_recent(self, request: web.Request) -> web.StreamResponse:
        limit = _int(request, "limit", PLATES_DEFAULT, 1, PLATES_MAX)
        return _json({"plates": await self.lot.recent_plates(limit)})

    async def _sync(self, _request: web.Request) -> web.StreamResponse:
        return _json({"sync": (await self.lot.status())["sync"]})

    async def _lanes(self, _request: web.Request) -> web.StreamResponse:
        return _json({"lanes": (await self.lot.status())["lanes"]})

    async def _alarms(self, _request: web.Request) -> web.StreamResponse:
        return _json({"alarms": await self.lot.alarms()})

    async def _sessions(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("state", "open") != "open":
            raise HttpError(400, "invalid_params", "state: only open sessions are served")
        return _json({"sessions": await self.lot.open_sessions()})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        after = _int(request, "after", 0, 0, None)
        limit = _int(request, "limit", EVENTS_PAGE_DEFAULT, 1, EVENTS_PAGE_MAX)
        events = await self.lot.events_after(after, limit)
        return _json({"events": events, "next": events[-1]["seq"] if events else after,
                      "more": len(events) == limit})

    # --- the technician's actions ---

    async def _gate_open(self, request: web.Request) -> web.StreamResponse:
        body, actor = await _body(request, GateOpen), _actor(request)
        lane = request.match_info["lane"]
        log.info("http.action", action="gate.open", actor=actor, lane=lane, reason=body.reason)
        await self.lot.open_gate(lane, reason=body.reason, actor=actor)
        return _json({"ok": True})

    async def _lane_mode(self, request: web.Request) -> web.StreamResponse:
        body, actor = await _body(request, LaneModeSet), _actor(request)
        lane = request.match_info["lane"]
        log.info("http.action", action="lane.mode", actor=actor, lane=lane, mode=body.mode)
        await self.lot.set_lane_mode(lane, body.mode, actor=actor)
        return _json({"ok": True})

    async def _lot_state(self, request: web.Request) -> web.StreamResponse:
        body, actor = await _body(request, LotStateSet), _actor(request)
        log.info("http.action", action="lot.state", actor=actor, state=body.state)
        await self.lot.set_lot_state(body.state, actor=actor)
        return _json({"ok": True})

    async def _bay_service(self, request: web.Request) -> web.StreamResponse:
        body, actor = await _body(request, BayServiceSet), _actor(request)
        bay = request.match_info["bay"]
        log.info("http.action", action="bay.service", actor=actor, bay=bay,
                 in_service=body.in_service)
        await self.lot.set_bay_service(bay, body.in_service, actor=actor)
        return _json({"ok": True})

    async def _alarm_ack(self, request: web.Request) -> web.StreamResponse:
        actor, alarm_id = _actor(request), request.match_info["alarm"]
        log.info("http.action", action="alarms.ack", actor=actor, alarm=alarm_id)
        return _json(await self.lot.acknowledge_alarm(alarm_id, actor=actor))

    # --- pay on foot ---

    def _desk(self) -> PayOnFoot:
        if self.pay is None:
            raise HttpError(503, "unavailable", "pay on foot is not served by this gateway")
        return self.pay

    async def _pay_fee(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        asked = set(query) & {"plate", "ticket"}
        if set(query) - {"plate", "ticket"} or len(asked) != 1:
            raise HttpError(400, "invalid_params", "give one of plate or ticket")
        plate, ticket = query.get("plate", ""), query.get("ticket", "")
        if not 1 <= len(plate or ticket) <= (32 if plate else 512):
            raise HttpError(400, "invalid_params", "plate: 1 to 32 characters, ticket: 1 to 512")
        desk = self._desk()
        with _pay_refusals():
            fee = await (desk.fee_by_plate(plate) if plate else desk.fee_by_ticket(ticket))
        return _json(fee.as_json())

    async def _pay_payment(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request, Payment)
        identity: Identity = request[IDENTITY]
        device = identity.account or "anonymous"
        desk = self._desk()
        with _pay_refusals():
            receipt = await desk.pay(device, PaymentRequest(
                body.session, body.amount_minor, body.currency, body.method, body.reference))
        return _json(receipt.as_json())


_PAY_STATUS = {"not_found": 404, "ambiguous": 409, "conflict": 409, "unavailable": 503}


@contextlib.contextmanager
def _pay_refusals() -> Iterator[None]:
    """The desk's refusals as the API's errors: 404, 409 or 503 (retry), with its code."""
    try:
        yield
    except PayRefused as e:
        headers = {"Retry-After": "1"} if e.kind == "unavailable" else None
        raise HttpError(_PAY_STATUS[e.kind], e.code, str(e), headers) from None


_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=_dumps)


def _error(status: int, code: str, message: str,
           headers: Mapping[str, str] | None = None) -> web.Response:
    response = _json({"error": {"code": code, "message": message}}, status)
    response.headers.update(headers or {})
    return response


def _file(name: str) -> web.Response:
    found = asset(name)
    return web.Response(body=found.body, headers={"Content-Type": found.media})


def _unauthenticated(message: str) -> HttpError:
    return HttpError(401, "unauthenticated", message,
                     {"WWW-Authenticate": 'Bearer realm="parking-gateway"'})


def _too_many(e: TooManyFailures) -> HttpError:
    return HttpError(429, "too_many_failures", str(e),
                     {"Retry-After": str(max(1, round(e.retry_after_s)))})


def _hung_up(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _address(request: web.Request) -> str:
    return request.remote or "unknown"


def _actor(request: web.Request) -> str:
    identity: Identity = request[IDENTITY]
    return identity.actor


def _int(request: web.Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < low or (high is not None and int(raw) > high):
        bounds = f"from {low}" + (f" to {high}" if high is not None else "")
        raise HttpError(400, "invalid_params", f"{name} must be a whole number {bounds}")
    return int(raw)


async def _body(request: web.Request, model: type[B]) -> B:
    if request.content_type != "application/json":
        raise HttpError(415, "bad_request", "send the body as application/json")
    try:
        raw = await request.json()
    except ValueError:
        raise HttpError(400, "bad_request", "the body is not JSON") from None
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}"
            for err in e.errors(include_url=False, include_input=False))
        raise HttpError(400, "invalid_params", problems) from None


async def _security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """Every answer: not cached, not sniffed, not framed, no referrer sent on."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"


def _tls_context(config: HttpServerConfig) -> ssl.SSLContext:
    tls = config.tls
    assert tls is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as e:
        raise HttpTlsError(f"cannot load the TLS files of http.tls ({tls.cert_file},"
                           f" {tls.key_file}): {e}") from None
    return context
