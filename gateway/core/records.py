"""What the journal stores, as the rest of the lot reads it: plain values, no I/O.

The journal (`gateway.journal`) writes and reads these; the pure core (access decisions) and
the drivers (alarms) take them without importing the journal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.core.events import Severity, envelope_json


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """An event as stored, with its sequence."""

    seq: int
    id: str
    type: str
    time: str
    data_json: str
    acked: bool

    def to_json(self, source: str) -> str:
        """The CloudEvents JSON text, ready to publish."""
        return envelope_json(source=source, sequence=self.seq, id=self.id, type=self.type,
                             time=self.time, data_json=self.data_json)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """An open session as stored: what a restarted gateway needs to let the car out."""

    session_id: str
    plate: str | None
    right_kind: str
    right_ref: str | None
    entry_lane: str | None
    entry_at: str
    entry_mono: float
    entry_boot: str
    entry_synced: bool
    data: str


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    payment_id: str
    session_id: str
    amount_minor: int
    currency: str
    method: str
    source: str
    paid_at: str
    valid_until: str | None


@dataclass(frozen=True, slots=True)
class BayRecord:
    bay_id: str
    state: str
    since: str
    source: str
    healthy: bool


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    kind: str
    version: int
    payload: str
    source: str
    applied_at: str


@dataclass(frozen=True, slots=True)
class Alarm:
    """A condition a technician must see. Raising an active alarm id again does nothing."""

    alarm_id: str  # `<code>` or `<code>:<subject>`, e.g. `gate.fault:lane-1`
    severity: Severity
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    component: str = "journal"
    raised_at: str = ""  # RFC 3339 UTC; the journal stamps it when the alarm is raised

    @property
    def code(self) -> str:
        return self.alarm_id.partition(":")[0]
