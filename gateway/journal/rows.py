"""The rows a write puts in the journal: state changes (one SQL statement per kind), events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar, Protocol, get_args

from gateway.core.events import BayState

INSERT_EVENT_SQL = "INSERT INTO outbox (seq, id, type, time, data) VALUES (?, ?, ?, ?, ?)"

_BAY_STATES = get_args(BayState)


class Change(Protocol):
    """One row-level state change, applied in the same transaction as its events.

    Each kind has one SQL statement; the writer runs consecutive changes of a
    kind with one executemany.
    """

    sql: ClassVar[str]

    def params(self) -> tuple[object, ...]: ...


@dataclass(frozen=True, slots=True)
class SetBayState:
    sql: ClassVar[str] = (
        "INSERT INTO bay_state (bay_id, state, since, source, healthy) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (bay_id) DO UPDATE SET state = excluded.state, since = excluded.since,"
        " source = excluded.source, healthy = excluded.healthy"
        # An SD card wears out: an unchanged bay is not rewritten.
        " WHERE bay_state.state IS NOT excluded.state OR bay_state.healthy IS NOT excluded.healthy"
    )
    bay_id: str
    state: BayState
    since: str  # RFC 3339 UTC
    source: str
    healthy: bool

    def __post_init__(self) -> None:
        # Checked here rather than by a CHECK constraint, which made the upsert 10x slower.
        if self.state not in _BAY_STATES:
            raise ValueError(f"bay state must be one of {_BAY_STATES}, not {self.state!r}")

    def params(self) -> tuple[object, ...]:
        return (self.bay_id, self.state, self.since, self.source, int(self.healthy))


@dataclass(frozen=True, slots=True)
class OpenSession:
    sql: ClassVar[str] = (
        "INSERT INTO sessions (session_id, plate, status, right_kind, right_ref, entry_lane,"
        " entry_at, entry_mono, entry_boot, entry_synced, data)"
        " VALUES (?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    session_id: str
    plate: str | None
    right_kind: str
    right_ref: str | None
    entry_lane: str | None
    entry_at: str
    entry_mono: float
    entry_boot: str
    entry_synced: bool
    data: str = "{}"

    def params(self) -> tuple[object, ...]:
        return (self.session_id, self.plate, self.right_kind, self.right_ref, self.entry_lane,
                self.entry_at, self.entry_mono, self.entry_boot, int(self.entry_synced), self.data)


@dataclass(frozen=True, slots=True)
class CloseSession:
    sql: ClassVar[str] = (
        "UPDATE sessions SET status = 'closed', exit_lane = ?, exit_at = ?, exit_mono = ?,"
        " exit_boot = ?, exit_synced = ?, duration_s = ?, clock_reliable = ?, fee_minor = ?,"
        " currency = ? WHERE session_id = ? AND status = 'open'"
    )
    session_id: str
    exit_lane: str | None
    exit_at: str
    exit_mono: float
    exit_boot: str
    exit_synced: bool
    duration_s: float
    clock_reliable: bool
    fee_minor: int
    currency: str

    def params(self) -> tuple[object, ...]:
        return (self.exit_lane, self.exit_at, self.exit_mono, self.exit_boot,
                int(self.exit_synced), self.duration_s, int(self.clock_reliable),
                self.fee_minor, self.currency, self.session_id)


@dataclass(frozen=True, slots=True)
class PutConfig:
    """A new version of pushed config; the highest version of a kind is in force."""

    sql: ClassVar[str] = (
        "INSERT INTO config_cache (kind, version, payload, source, applied_at)"
        " VALUES (?, ?, ?, ?, ?)"
    )
    kind: str  # tariffs | permits | reservations | deny_list
    version: int
    payload: str  # JSON
    source: str
    applied_at: str

    def params(self) -> tuple[object, ...]:
        return (self.kind, self.version, self.payload, self.source, self.applied_at)


@dataclass(frozen=True, slots=True)
class RecordPayment:
    """A payment for a session; the same payment id again is ignored (at-least-once inbound)."""

    sql: ClassVar[str] = (
        "INSERT INTO payments (payment_id, session_id, amount_minor, currency, method, source,"
        " paid_at, valid_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
    )
    payment_id: str
    session_id: str
    amount_minor: int
    currency: str
    method: str
    source: str
    paid_at: str
    valid_until: str | None = None

    def params(self) -> tuple[object, ...]:
        return (self.payment_id, self.session_id, self.amount_minor, self.currency, self.method,
                self.source, self.paid_at, self.valid_until)


@dataclass(frozen=True, slots=True)
class Audit:
    sql: ClassVar[str] = (
        "INSERT INTO audit (at, actor, action, subject, reason, details) VALUES (?, ?, ?, ?, ?, ?)"
    )
    at: str
    actor: str  # "technician:<name>", "backend", "lane:<id>"
    action: str
    subject: str | None = None
    reason: str | None = None
    details: str = "{}"

    def params(self) -> tuple[object, ...]:
        return (self.at, self.actor, self.action, self.subject, self.reason, self.details)


@dataclass(frozen=True, slots=True)
class PutSetting:
    """A technician's setting (`lot.state`, `lane.mode:<lane>`, `bay.service:<bay>`), restored
    at start."""

    sql: ClassVar[str] = (
        "INSERT INTO settings (key, value, at, actor) VALUES (?1, ?2, ?3, ?4)"
        " ON CONFLICT (key) DO UPDATE SET value = ?2, at = ?3, actor = ?4"
    )
    key: str
    value: object  # stored as JSON
    at: str  # RFC 3339 UTC
    actor: str

    def params(self) -> tuple[object, ...]:
        return (self.key, json.dumps(self.value, separators=(",", ":")), self.at, self.actor)


@dataclass(frozen=True, slots=True)
class PutAlarm:
    """An alarm raised: kept until it is cleared or acknowledged, across restarts."""

    sql: ClassVar[str] = (
        "INSERT OR REPLACE INTO alarms (alarm_id, severity, message, details, component,"
        " raised_at) VALUES (?, ?, ?, ?, ?, ?)"
    )
    alarm_id: str
    severity: str
    message: str
    details: str  # JSON
    component: str
    raised_at: str  # RFC 3339 UTC

    def params(self) -> tuple[object, ...]:
        return (self.alarm_id, self.severity, self.message, self.details, self.component,
                self.raised_at)


@dataclass(frozen=True, slots=True)
class DropAlarm:
    """An alarm cleared or acknowledged."""

    sql: ClassVar[str] = "DELETE FROM alarms WHERE alarm_id = ?"
    alarm_id: str

    def params(self) -> tuple[object, ...]:
        return (self.alarm_id,)
