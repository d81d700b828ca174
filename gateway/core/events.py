"""Domain events and their CloudEvents 1.0 envelope.

A producer makes an `Event` (id, type, time, data); the journal gives it its
gapless per-gateway sequence number when it commits (the envelope's `seq`, an
extension of our own: docs/events.md), and the sync side wraps the stored row in
the envelope with `envelope_json`. The data is serialised once,
when the event is made, and never parsed again on the way out.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from pydantic import AwareDatetime, BeforeValidator

SPEC_VERSION = "1.0"
TYPE_PREFIX = "org.parking.v1."
DATA_CONTENT_TYPE = "application/json"


class EventType(StrEnum):
    SESSION_STARTED = "session.started"
    SESSION_ENDED = "session.ended"
    GATE_OPENED = "gate.opened"
    GATE_CLOSED = "gate.closed"
    BAY_CHANGED = "bay.changed"
    ALARM_RAISED = "alarm.raised"
    ALARM_CLEARED = "alarm.cleared"
    VIOLATION_DETECTED = "violation.detected"
    PAYMENT_RECORDED = "payment.recorded"
    COMMAND_EXECUTED = "command.executed"
    CONFIG_APPLIED = "config.applied"
    OCCUPANCY_HOURLY = "occupancy.hourly"
    LEVEL_COUNTED = "level.counted"

    @property
    def cloudevents_type(self) -> str:
        return TYPE_PREFIX + self.value


@dataclass(frozen=True, slots=True)
class Event:
    """An event as a producer makes it, before the journal gives it a sequence."""

    type: EventType
    id: str  # UUIDv7, text form
    time: str  # RFC 3339, UTC, e.g. 2026-03-02T08:00:00.123456Z
    data_json: str  # the `data` member, already serialised

    @property
    def data(self) -> Any:
        return json.loads(self.data_json)


def make_event(type: EventType, data: Mapping[str, Any], at: datetime) -> Event:
    """Make an event stamped at `at` (the wall clock's now, from the injected clock)."""
    return Event(type, uuid7(), rfc3339(at), dumps(data))


def source_uri(lot_id: str, gateway_id: str) -> str:
    return f"urn:parking:{lot_id}:{gateway_id}"


def envelope_json(
    *, source: str, sequence: int, id: str, type: str, time: str, data_json: str
) -> str:
    """The structured-mode CloudEvents JSON text of a stored event.

    `type` is the short name (`session.started`); the data text is spliced in as is.
    """
    return (
        '{"specversion":"' + SPEC_VERSION + '","id":' + json.dumps(id)
        + ',"source":' + json.dumps(source)
        + ',"type":"' + TYPE_PREFIX + type
        + '","time":"' + time
        + '","datacontenttype":"' + DATA_CONTENT_TYPE
        + '","seq":' + str(sequence)
        + ',"data":' + data_json + "}"
    )


# One encoder, made once: building a JSONEncoder per call costs more than encoding.
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False,
                            ensure_ascii=False)


def dumps(data: Mapping[str, Any]) -> str:
    """Compact, deterministic JSON; NaN and infinities are refused (not valid JSON)."""
    return _ENCODER.encode(data)


def rfc3339(at: datetime) -> str:
    """UTC with microseconds and a `Z`, the one time format on the wire."""
    if at.utcoffset() is None:  # naive, or a tzinfo that knows no offset
        raise ValueError("event times must be tz-aware")
    # isoformat is several times faster than strftime; "+00:00" becomes "Z".
    return at.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


_LEAP_SECOND = re.compile(r"^(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:)60(?:[.,]\d+)?(.*)$", re.ASCII)


def _without_leap_second(value: object) -> object:
    """RFC 3339 allows a leap second (`23:59:60Z`); Python's datetime cannot hold one, so it
    is read as the last microsecond of the minute it ends."""
    if isinstance(value, str) and (leap := _LEAP_SECOND.match(value)):
        return f"{leap[1]}59.999999{leap[2]}"
    return value


# A time the backend sends: any RFC 3339 date-time, with an offset (pydantic reads any number
# of fractional digits, any offset, T and Z in either case; a leap second as above).
Rfc3339Time = Annotated[AwareDatetime, BeforeValidator(_without_leap_second)]


_last_uuid7_ms = 0
_last_uuid7_seq = 0


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then a counter and randomness.

    Ids made in one process sort in creation order even within a millisecond
    (method 1 of RFC 9562 section 6.2: a 12-bit counter in rand_a, reseeded each ms).
    """
    global _last_uuid7_ms, _last_uuid7_seq
    ms = time.time_ns() // 1_000_000
    if ms > _last_uuid7_ms:
        _last_uuid7_ms = ms
        _last_uuid7_seq = int.from_bytes(os.urandom(2)) & 0x3FF  # leave room to count
    else:
        _last_uuid7_seq += 1
        if _last_uuid7_seq > 0xFFF:  # counter exhausted: borrow the next millisecond
            _last_uuid7_ms += 1
            _last_uuid7_seq = 0
        ms = _last_uuid7_ms
    rand_b = int.from_bytes(os.urandom(8)) & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms << 80) | (0x7 << 76) | (_last_uuid7_seq << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# --- Payloads ---------------------------------------------------------------------
#
# One builder per EventType, named after it (`session.started` -> `session_started`).
# Data keys are camelCase, as in APDS; an optional field left as None is omitted, never
# sent as null. docs/schemas/<type>.json describes the same shapes as JSON Schema, and
# tests/test_events.py keeps builders, TypedDicts and schemas in step.

CredentialType = Literal["licensePlate", "permit", "reservation", "ticket"]
TransactionType = Literal["charge", "payment", "uncollected"]
RightKind = Literal["visitor", "permit", "reservation", "account"]
ExitReason = Literal["normal", "manual_vend", "lost_ticket", "unable_to_collect", "remote_open"]
GateOpenReason = Literal["decision", "manual", "command", "locked_open", "safety_reopen"]
GateCloseReason = Literal["vehicle_passed", "timeout", "manual", "command", "lock_released"]
BayType = Literal["regular", "disabled", "ev", "vip", "reserved", "loading"]
BayState = Literal["free", "occupied", "unknown"]
BaySource = Literal["ultrasonic", "magnetic", "manual"]
Severity = Literal["info", "warning", "critical"]
ViolationKind = Literal[
    "tailgating", "anti_passback", "overstay", "out_of_service_bay", "unpaid_overstay",
    "deny_listed",
]
PaymentMethod = Literal["card", "cash", "app", "account", "other"]
PaymentSource = Literal["pay_station", "backend", "manual"]
CommandOutcome = Literal["accepted", "rejected", "failed", "dropped"]
ConfigKind = Literal["tariffs", "permits", "reservations", "deny_list", "settings",
                     "permit_pools", "recurring_reservations"]
ConfigOutcome = Literal["applied", "rejected"]
ConfigSource = Literal["mqtt", "http", "local"]
LevelCountCause = Literal["ramp", "recount", "correction"]


class Money(TypedDict):
    amountMinor: int  # ISO 4217 minor units (cents), so sums are exact
    currency: str  # ISO 4217 code, e.g. "EUR"


class Credential(TypedDict):
    """What identified the vehicle or driver (APDS CredentialAssigned, identifier flattened)."""

    type: CredentialType
    identifier: str
    confidence: NotRequired[float]  # 0..1, for a plate read


class Vehicle(TypedDict):
    plate: str  # normalised, as the plate matcher compares it
    plateCountry: NotRequired[str]  # ISO 3166-1 alpha-2


class Segment(TypedDict):
    """A stretch of a session under one rate table (APDS Segment)."""

    actualStart: str
    actualEnd: NotRequired[str]  # absent while the segment is still running
    rateTableId: NotRequired[str]
    amount: NotRequired[Money]


class FinancialTransaction(TypedDict):
    type: TransactionType
    amount: Money
    reference: NotRequired[str]  # payment id, receipt number, ...


class Right(TypedDict):
    """The right the vehicle parks under (APDS AssignedRight, reduced to its kind)."""

    kind: RightKind
    reference: NotRequired[str]  # permit, reservation or account id


class ClockStatus(TypedDict):
    """How far the session's times can be trusted (a Pi has no RTC; see gateway.core.clock)."""

    synchronized: bool  # the wall clock was NTP-synchronised when stamped
    reliable: bool  # the times, and at the end the duration, are trustworthy
    reason: NotRequired[str]  # why not, when not


class FeeLine(TypedDict):
    code: str  # tariff line code, stable for reporting
    description: str
    amountMinor: int  # negative for a discount


class Fee(TypedDict):
    amountMinor: int  # the sum of the lines
    currency: str
    lines: list[FeeLine]


class SessionStartedData(TypedDict):
    sessionId: str
    actualStart: str
    identifiedCredentials: list[Credential]
    identifiedVehicle: NotRequired[Vehicle]  # absent when no plate was read
    segments: list[Segment]
    financialTransactions: list[FinancialTransaction]
    laneId: str  # the entry lane
    right: Right
    clock: ClockStatus


class SessionEndedData(SessionStartedData):
    # laneId is the exit lane here
    actualEnd: str
    durationSeconds: int
    fee: Fee
    exitReason: ExitReason


class _GateData(TypedDict):
    laneId: str
    gateId: str
    sessionId: NotRequired[str]
    commandId: NotRequired[str]


class GateOpenedData(_GateData):
    reason: GateOpenReason


class GateClosedData(_GateData):
    reason: GateCloseReason


class BayChangedData(TypedDict):
    bayId: str
    floor: str
    zone: str
    bayType: BayType
    state: BayState
    previousState: BayState
    source: BaySource
    sensorHealthy: bool


class AlarmData(TypedDict):
    alarmId: str  # stable key, the same on raised and cleared, e.g. "journal.over_capacity"
    code: str  # the kind of condition, for grouping
    severity: Severity
    message: str
    component: str
    details: dict[str, Any]


class ViolationDetectedData(TypedDict):
    kind: ViolationKind
    laneId: NotRequired[str]
    bayId: NotRequired[str]
    # A refused or unmatched plate (no sessionId) may be its pseudonym, `hmac-sha256:<hex>`.
    plate: NotRequired[str]
    sessionId: NotRequired[str]
    details: dict[str, Any]


class PaymentRecordedData(TypedDict):
    paymentId: str
    sessionId: str
    amount: Money
    method: PaymentMethod
    source: PaymentSource
    validUntil: NotRequired[str]  # exit is allowed until then
    device: NotRequired[str]  # the pay station's account, for one paid at a station
    reference: NotRequired[str]  # the station's own reference of the payment


class CommandExecutedData(TypedDict):
    commandId: str
    command: str  # open_gate, set_lot_state, ...; an unknown one is reported as received
    outcome: CommandOutcome
    reason: NotRequired[str]
    issuedBy: NotRequired[str]
    details: dict[str, Any]


class OccupancyGroup(TypedDict):
    floor: str
    zone: str
    bayType: BayType
    capacity: int  # bays in service
    occupiedAvg: float  # time-weighted mean of occupied bays over the hour
    occupiedMax: int
    unknownMax: int  # bays with no trustworthy reading at the worst moment


class OccupancyHourlyData(TypedDict):
    hourStart: str
    hourEnd: str
    entries: int
    exits: int
    groups: list[OccupancyGroup]


class LevelCountedData(TypedDict):
    """A counted level's count changed: a vehicle crossed a ramp, or the count was set."""

    levelId: str
    zone: str
    count: int  # vehicles on the level now, within 0..capacity
    previousCount: int
    capacity: int
    free: int  # capacity - count
    cause: LevelCountCause
    rampId: NotRequired[str]  # the ramp crossed, for cause "ramp"
    clamped: NotRequired[bool]  # the crossing would have taken the count out of 0..capacity


class ConfigAppliedData(TypedDict):
    kind: ConfigKind
    version: int
    outcome: ConfigOutcome
    errors: list[str]  # empty when applied
    source: ConfigSource


def segment(
    *,
    start: datetime,
    end: datetime | None = None,
    rate_table_id: str | None = None,
    amount: Money | None = None,
) -> Segment:
    """A session segment, with its times in wire format."""
    seg: Segment = {"actualStart": rfc3339(start)}
    if end is not None:
        seg["actualEnd"] = rfc3339(end)
    if rate_table_id is not None:
        seg["rateTableId"] = rate_table_id
    if amount is not None:
        seg["amount"] = amount
    return seg


def session_started(
    *,
    at: datetime,
    session_id: str,
    lane_id: str,
    actual_start: datetime,
    credentials: Sequence[Credential],
    segments: Sequence[Segment],
    right: Right,
    clock: ClockStatus,
    vehicle: Vehicle | None = None,
    transactions: Sequence[FinancialTransaction] = (),
) -> Event:
    """`at` is when the event is made; `actual_start` is when the session began (the lane's
    stamp of the entry), so a retried or late event still carries the true start."""
    return make_event(EventType.SESSION_STARTED, _session_data(
        session_id, lane_id, actual_start, credentials, segments, right, clock, vehicle,
        transactions), at)


def session_ended(
    *,
    at: datetime,
    session_id: str,
    lane_id: str,
    actual_start: datetime,
    actual_end: datetime,
    duration_seconds: int,
    credentials: Sequence[Credential],
    segments: Sequence[Segment],
    right: Right,
    clock: ClockStatus,
    currency: str,
    fee_lines: Sequence[FeeLine],
    vehicle: Vehicle | None = None,
    transactions: Sequence[FinancialTransaction] = (),
    exit_reason: ExitReason = "normal",
) -> Event:
    """`duration_seconds` comes from the monotonic clock where it can (gateway.core.clock.elapsed),
    so it need not equal actual_end - actual_start. The fee total is summed from the lines,
    so the two cannot disagree."""
    started = _session_data(session_id, lane_id, actual_start, credentials, segments, right,
                            clock, vehicle, transactions)
    data: SessionEndedData = {
        **started,
        "actualEnd": rfc3339(actual_end),
        "durationSeconds": duration_seconds,
        "fee": {"amountMinor": sum(line["amountMinor"] for line in fee_lines),
                "currency": currency, "lines": list(fee_lines)},
        "exitReason": exit_reason,
    }
    return make_event(EventType.SESSION_ENDED, data, at)


def _session_data(
    session_id: str,
    lane_id: str,
    actual_start: datetime,
    credentials: Sequence[Credential],
    segments: Sequence[Segment],
    right: Right,
    clock: ClockStatus,
    vehicle: Vehicle | None,
    transactions: Sequence[FinancialTransaction],
) -> SessionStartedData:
    data: SessionStartedData = {
        "sessionId": session_id,
        "actualStart": rfc3339(actual_start),
        "identifiedCredentials": list(credentials),
        "segments": list(segments),
        "financialTransactions": list(transactions),
        "laneId": lane_id,
        "right": right,
        "clock": clock,
    }
    if vehicle is not None:
        data["identifiedVehicle"] = vehicle
    return data


def gate_opened(
    *,
    at: datetime,
    lane_id: str,
    gate_id: str,
    reason: GateOpenReason,
    session_id: str | None = None,
    command_id: str | None = None,
) -> Event:
    data: GateOpenedData = {"laneId": lane_id, "gateId": gate_id, "reason": reason}
    _add_gate_refs(data, session_id, command_id)
    return make_event(EventType.GATE_OPENED, data, at)


def gate_closed(
    *,
    at: datetime,
    lane_id: str,
    gate_id: str,
    reason: GateCloseReason,
    session_id: str | None = None,
    command_id: str | None = None,
) -> Event:
    data: GateClosedData = {"laneId": lane_id, "gateId": gate_id, "reason": reason}
    _add_gate_refs(data, session_id, command_id)
    return make_event(EventType.GATE_CLOSED, data, at)


def _add_gate_refs(data: _GateData, session_id: str | None, command_id: str | None) -> None:
    if session_id is not None:
        data["sessionId"] = session_id
    if command_id is not None:
        data["commandId"] = command_id


def bay_changed(
    *,
    at: datetime,
    bay_id: str,
    floor: str,
    zone: str,
    bay_type: BayType,
    state: BayState,
    previous_state: BayState,
    source: BaySource,
    sensor_healthy: bool,
) -> Event:
    data: BayChangedData = {
        "bayId": bay_id, "floor": floor, "zone": zone, "bayType": bay_type, "state": state,
        "previousState": previous_state, "source": source, "sensorHealthy": sensor_healthy,
    }
    return make_event(EventType.BAY_CHANGED, data, at)


def alarm_raised(
    *,
    at: datetime,
    alarm_id: str,
    code: str,
    severity: Severity,
    message: str,
    component: str,
    details: Mapping[str, Any] | None = None,
) -> Event:
    return make_event(EventType.ALARM_RAISED,
                      _alarm_data(alarm_id, code, severity, message, component, details), at)


def alarm_cleared(
    *,
    at: datetime,
    alarm_id: str,
    code: str,
    severity: Severity,
    message: str,
    component: str,
    details: Mapping[str, Any] | None = None,
) -> Event:
    return make_event(EventType.ALARM_CLEARED,
                      _alarm_data(alarm_id, code, severity, message, component, details), at)


def _alarm_data(
    alarm_id: str,
    code: str,
    severity: Severity,
    message: str,
    component: str,
    details: Mapping[str, Any] | None,
) -> AlarmData:
    return {"alarmId": alarm_id, "code": code, "severity": severity, "message": message,
            "component": component, "details": dict(details or {})}


def violation_detected(
    *,
    at: datetime,
    kind: ViolationKind,
    lane_id: str | None = None,
    bay_id: str | None = None,
    plate: str | None = None,
    session_id: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> Event:
    data: ViolationDetectedData = {"kind": kind, "details": dict(details or {})}
    if lane_id is not None:
        data["laneId"] = lane_id
    if bay_id is not None:
        data["bayId"] = bay_id
    if plate is not None:
        data["plate"] = plate
    if session_id is not None:
        data["sessionId"] = session_id
    return make_event(EventType.VIOLATION_DETECTED, data, at)


def payment_recorded(
    *,
    at: datetime,
    payment_id: str,
    session_id: str,
    amount: Money,
    method: PaymentMethod,
    source: PaymentSource,
    valid_until: datetime | None = None,
    device: str | None = None,
    reference: str | None = None,
) -> Event:
    data: PaymentRecordedData = {
        "paymentId": payment_id, "sessionId": session_id, "amount": amount, "method": method,
        "source": source,
    }
    if valid_until is not None:
        data["validUntil"] = rfc3339(valid_until)
    if device is not None:
        data["device"] = device
    if reference is not None:
        data["reference"] = reference
    return make_event(EventType.PAYMENT_RECORDED, data, at)


def command_executed(
    *,
    at: datetime,
    command_id: str,
    command: str,
    outcome: CommandOutcome,
    reason: str | None = None,
    issued_by: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> Event:
    data: CommandExecutedData = {
        "commandId": command_id, "command": command, "outcome": outcome,
        "details": dict(details or {}),
    }
    if reason is not None:
        data["reason"] = reason
    if issued_by is not None:
        data["issuedBy"] = issued_by
    return make_event(EventType.COMMAND_EXECUTED, data, at)


def config_applied(
    *,
    at: datetime,
    kind: ConfigKind,
    version: int,
    outcome: ConfigOutcome,
    source: ConfigSource,
    errors: Sequence[str] = (),
) -> Event:
    data: ConfigAppliedData = {
        "kind": kind, "version": version, "outcome": outcome, "errors": list(errors),
        "source": source,
    }
    return make_event(EventType.CONFIG_APPLIED, data, at)


def occupancy_hourly(
    *,
    at: datetime,
    hour_start: datetime,
    hour_end: datetime,
    entries: int,
    exits: int,
    groups: Sequence[OccupancyGroup],
) -> Event:
    """The lot's utilisation over one clock hour, by floor, zone and bay type."""
    data: OccupancyHourlyData = {
        "hourStart": rfc3339(hour_start), "hourEnd": rfc3339(hour_end), "entries": entries,
        "exits": exits, "groups": list(groups),
    }
    return make_event(EventType.OCCUPANCY_HOURLY, data, at)


def level_counted(
    *,
    at: datetime,
    level_id: str,
    zone: str,
    count: int,
    previous_count: int,
    capacity: int,
    cause: LevelCountCause,
    ramp_id: str | None = None,
    clamped: bool = False,
) -> Event:
    """A counted level's new count (gateway.controllers.counting)."""
    data: LevelCountedData = {
        "levelId": level_id, "zone": zone, "count": count, "previousCount": previous_count,
        "capacity": capacity, "free": max(0, capacity - count), "cause": cause,
    }
    if ramp_id is not None:
        data["rampId"] = ramp_id
    if clamped:
        data["clamped"] = True
    return make_event(EventType.LEVEL_COUNTED, data, at)
