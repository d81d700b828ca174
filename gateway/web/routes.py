"""The HTTP API's routes as data: path, method, who may call it, parameters, body, answer.

The server registers its handlers from this table and the OpenAPI document (`openapi.py`) is
written from it, so the two cannot differ on a route. No aiohttp here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from gateway.core.availability import BAY_TYPES
from gateway.core.operations import LaneMode, LotState
from gateway.core.pay import StationMethod
from gateway.web.auth import Permission
from gateway.web.console import ASSETS

EVENTS_PAGE_MAX = 500
EVENTS_PAGE_DEFAULT = 100
PLATES_MAX = 200  # the daemon keeps the last 200 reads
PLATES_DEFAULT = 20


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Login(Body):
    user: Annotated[str, StringConstraints(min_length=1, max_length=63)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class GateOpen(Body):
    """A manual vend; the reason goes into the audit trail."""

    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3,
                                             max_length=500)]


class LaneModeSet(Body):
    mode: LaneMode


class LotStateSet(Body):
    state: LotState


class BayServiceSet(Body):
    in_service: bool = Field(alias="inService")


class Payment(Body):
    """A pay station's payment: exactly the `dueMinor` its fee lookup gave, in the lot's
    currency. `reference` is the station's own (its receipt number): the same reference again
    is the same payment."""

    session: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    amount_minor: int = Field(alias="amountMinor", ge=1, le=10**9)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    method: StationMethod
    reference: Annotated[str, StringConstraints(min_length=1, max_length=128,
                                                pattern=r"^[\x21-\x7e]+$")]


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    description: str
    schema: dict[str, Any]
    where: Literal["query", "path"] = "query"


@dataclass(frozen=True, slots=True)
class Route:
    name: str  # the OpenAPI operationId, and the server's handler
    method: Literal["GET", "POST"]
    path: str
    summary: str
    allow: Permission | None  # None: anyone who reaches the port
    response: dict[str, Any]  # the schema of a 200's body
    params: tuple[Param, ...] = ()
    body: type[Body] | None = None
    media: str = "application/json"


def _list_of(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {key: {"type": "array", "items": item}},
            "required": [key]}


OBJECT: dict[str, Any] = {"type": "object"}
DONE: dict[str, Any] = {"type": "object", "properties": {"ok": {"const": True}},
                        "required": ["ok"]}
AVAILABILITY: dict[str, Any] = {"$ref": "#/components/schemas/Availability"}
_FILTERS = (
    Param("floor", "Only the bays of this floor.", {"type": "string"}),
    Param("zone", "Only the bays of this zone.", {"type": "string"}),
    Param("type", "Only the bays of this type.", {"enum": list(BAY_TYPES)}),
)
_LANE = Param("lane", "The lane's id.", {"type": "string"}, "path")
_TEXT: dict[str, Any] = {"type": "string"}
_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
BAYS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "recordDateTime": {"type": "string", "format": "date-time"},
        "bays": {"type": "array", "description": "Each bay with a sensor, in the config's order.",
                 "items": {"type": "object", "properties": {
                     "bayId": _TEXT, "floor": _TEXT, "zone": _TEXT,
                     "type": {"enum": list(BAY_TYPES)},
                     "state": {"enum": ["free", "occupied", "unknown"]},
                     "inService": {"type": "boolean"}},
                     "required": ["bayId", "floor", "zone", "type", "state", "inService"]}},
        "counted": {"type": "array",
                    "description": "The bays without a sensor, per floor, zone and type, and how"
                                   " many are taken: an estimate from the vehicles inside, as"
                                   " the availability document makes it.",
                    "items": {"type": "object", "properties": {
                        "floor": _TEXT, "zone": _TEXT, "type": {"enum": list(BAY_TYPES)},
                        "total": _COUNT, "occupied": _COUNT},
                        "required": ["floor", "zone", "type", "total", "occupied"]}},
    },
    "required": ["recordDateTime", "bays", "counted"],
}
SYNC: dict[str, Any] = {"type": "object", "properties": {"sync": {
    "type": "object", "description": "As `parking-gateway status` shows the sync side.",
    "properties": {"connected": {"type": "boolean"}, "backlog": _COUNT,
                   "lag_s": {"type": ["number", "null"]}},
    "required": ["connected", "backlog"]}}, "required": ["sync"]}

_MONEY: dict[str, Any] = {"type": "integer", "minimum": 0, "description": "Minor units."}
_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
PAY_FEE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "session": _TEXT, "plate": {"type": ["string", "null"]}, "enteredAt": _TIME,
        "pricedAt": _TIME, "feeMinor": _MONEY, "paidMinor": _MONEY,
        "dueMinor": {**_MONEY, "description": "What to take now (minor units): 0 when the"
                     " payments made let the car out."},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "exitBy": {"type": ["string", "null"], "format": "date-time",
                   "description": "Paying `dueMinor` now, the car may leave until then (the"
                                  " payment grace); with nothing due, until the payments made"
                                  " run out."}},
    "required": ["session", "plate", "enteredAt", "pricedAt", "feeMinor", "paidMinor",
                 "dueMinor", "currency", "exitBy"],
}
PAY_RECEIPT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "paymentId": _TEXT, "session": _TEXT, "amountMinor": _MONEY, "currency": _TEXT,
        "method": {"enum": ["cash", "card", "mobile"]}, "reference": _TEXT, "device": _TEXT,
        "paidAt": _TIME, "exitBy": _TIME,
        "replayed": {"type": "boolean",
                     "description": "True: this reference was paid before; this is the first"
                                    " payment's receipt, nothing new was recorded."}},
    "required": ["paymentId", "session", "amountMinor", "currency", "method", "reference",
                 "device", "paidAt", "exitBy", "replayed"],
}

ROUTES: tuple[Route, ...] = (
    Route("console", "GET", "/", "The web console: one page, and its files under /static/.",
          None, _TEXT, media="text/html"),
    Route("static", "GET", "/static/{file}",
          "A file of the console: its stylesheet, script or icon.", None, _TEXT,
          params=(Param("file", "The file's name.", {"enum": list(ASSETS)}, "path"),),
          media="*/*"),
    Route("healthz", "GET", "/healthz", "Liveness: the daemon answers.", None,
          {"type": "object", "properties": {"status": {"const": "alive"}}}),
    Route("readyz", "GET", "/readyz",
          "Readiness: the journal is open and the lanes are turning (503 until then).", None,
          {"type": "object", "properties": {
              "ready": {"type": "boolean"},
              "checks": {"type": "object", "additionalProperties": {"type": "boolean"}}}}),
    Route("metrics", "GET", "/metrics", "Prometheus metrics (text exposition format).",
          "read", {"type": "string"}, media="text/plain"),
    Route("openapi", "GET", "/api/v1/openapi.json", "This document.", None, OBJECT),
    Route("login", "POST", "/api/v1/login",
          "A browser's login: sets the session cookie; answers the CSRF token for actions.",
          None, {"type": "object", "properties": {
              "account": {"type": "string"}, "role": {"type": "string"},
              "csrfToken": {"type": "string"}}}, body=Login),
    Route("logout", "POST", "/api/v1/logout", "Ends the browser's session.", None, DONE),
    Route("session", "GET", "/api/v1/session",
          "Who the caller is: account, role and, for a browser, its CSRF token.",
          "availability", {"type": "object", "properties": {
              "account": {"type": ["string", "null"]}, "role": {"type": "string"},
              "csrfToken": {"type": "string"}}}),
    Route("availability", "GET", "/api/v1/availability",
          "The availability document, of the lot or of a floor, zone or bay type.",
          "availability", AVAILABILITY, params=_FILTERS),
    Route("availability_stream", "GET", "/api/v1/availability/stream",
          "Server-Sent Events: the availability document now (event `availability`), then"
          " each time it changes; a comment line every 15 s keeps the link open.",
          "availability", {"type": "string"}, params=_FILTERS, media="text/event-stream"),
    Route("bays", "GET", "/api/v1/bays",
          "Each bay with a sensor and its state, and the bays without one, counted: the"
          " console's bay grid.", "availability", BAYS),
    Route("lanes", "GET", "/api/v1/lanes", "Each lane's mode, state, barrier and counts.",
          "read", _list_of("lanes", OBJECT)),
    Route("plates_recent", "GET", "/api/v1/plates/recent",
          "The lanes' latest plate reads, newest first, as `parking-gateway plates recent`"
          " shows them (kept `lpr.recent_max_age_min`).", "read", _list_of("plates", OBJECT),
          params=(Param("limit", "The most reads in the answer.",
                        {"type": "integer", "minimum": 1, "maximum": PLATES_MAX,
                         "default": PLATES_DEFAULT}),)),
    Route("sync", "GET", "/api/v1/sync",
          "The backend link: connected or not, the events not yet acknowledged and the age"
          " of the oldest.", "read", SYNC),
    Route("report_today", "GET", "/api/v1/report/today",
          "Today's occupancy by hour and revenue, lot-local, as `parking-gateway report --day"
          " <today> --json` gives it.", "read", OBJECT),
    Route("alarms", "GET", "/api/v1/alarms", "The active alarms, oldest first.", "read",
          _list_of("alarms", OBJECT)),
    Route("sessions", "GET", "/api/v1/sessions", "The open parking sessions.", "read",
          _list_of("sessions", OBJECT),
          params=(Param("state", "Which sessions: only `open` is served.",
                        {"enum": ["open"], "default": "open"}),)),
    Route("events", "GET", "/api/v1/events",
          "Stored events after a sequence, in order, a page at a time (as CloudEvents).",
          "read", {"type": "object", "properties": {
              "events": {"type": "array", "items": OBJECT},
              "next": {"type": "integer",
                       "description": "`after` for the next page: the last sequence here."},
              "more": {"type": "boolean"}}, "required": ["events", "next", "more"]},
          params=(Param("after", "Events with a higher sequence.",
                        {"type": "integer", "minimum": 0, "default": 0}),
                  Param("limit", "The most events in the page.",
                        {"type": "integer", "minimum": 1, "maximum": EVENTS_PAGE_MAX,
                         "default": EVENTS_PAGE_DEFAULT}))),
    Route("gate_open", "POST", "/api/v1/lanes/{lane}/open",
          "Open the lane's barrier for one vehicle (a manual vend, audited with the reason).",
          "act", DONE, params=(_LANE,), body=GateOpen),
    Route("lane_mode", "POST", "/api/v1/lanes/{lane}/mode", "Set the lane's mode (audited).",
          "act", DONE, params=(_LANE,), body=LaneModeSet),
    Route("lot_state", "POST", "/api/v1/lot/state",
          "Open or close the lot, or mark it full (audited).", "act", DONE, body=LotStateSet),
    Route("bay_service", "POST", "/api/v1/bays/{bay}/service",
          "Take a bay out of service, or put it back (audited).", "act", DONE,
          params=(Param("bay", "The bay's id.", {"type": "string"}, "path"),),
          body=BayServiceSet),
    Route("alarm_ack", "POST", "/api/v1/alarms/{alarm}/ack",
          "Acknowledge an active alarm: it is cleared (audited).", "act", OBJECT,
          params=(Param("alarm", "The alarm's id.", {"type": "string"}, "path"),)),
    # --- pay on foot (the device role; docs/http.md) ---
    Route("pay_fee", "GET", "/api/v1/pay/fee",
          "A pay station's lookup: the stay found by plate (as the exit lane matches it) or by"
          " ticket, its fee now, what is paid and what is due.", "pay", PAY_FEE,
          params=(Param("plate", "The plate as the driver typed it (one of plate, ticket).",
                        {"type": "string", "minLength": 1, "maxLength": 32}),
                  Param("ticket", "The text of the ticket's QR code.",
                        {"type": "string", "minLength": 1, "maxLength": 512}))),
    Route("pay_payment", "POST", "/api/v1/pay/payments",
          "Record a payment of what is due, journaled as `payment.recorded` with the station's"
          " account and reference; the same reference again answers the first receipt.",
          "pay", PAY_RECEIPT, body=Payment),
)
BY_NAME = {route.name: route for route in ROUTES}
