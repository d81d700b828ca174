"""`bench retention`: how big the journal grows over a year of a lot's traffic, with and without
retention (docs/privacy.md gives the figure for the end-to-end lot).

One day of the lot's events is written again and again through the journal's own write path
(`Journal.commit`, its rows and its batches), each time its times and ids moved on by a whole
number of days: a date `d` days later, an id (UUID) made `d` days later, so sessions and
payments stay distinct from day to day. The state each event reports goes with it (a session
opened or closed, a payment, a bay, an alarm), as the daemon writes it; the backend confirms
each day's events at its end. Then a journal with retention runs its maintenance until nothing
more has expired, as the daemon's does every minute, and the size of each journal's files is
taken.

The day is a recording (`journal export` of the simulated end-to-end day: `parking-sim` runs it,
tests/e2e/test_e2e_lot.py) or, with none given, one made here like it: the same arrivals per
hour, stays, mix of permits, reservations, visitors and deny-listed cars, tailgaters and
tariff, with no simulator.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import random
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.config import JournalConfig
from gateway.core import events
from gateway.core.clock import FakeClock
from gateway.core.events import TYPE_PREFIX, Event, EventType
from gateway.core.tariff import RateTable, free_quote, quote
from gateway.journal import (
    Change,
    CloseSession,
    Journal,
    JournalStats,
    OpenSession,
    RecordPayment,
    SetBayState,
)
from gateway.journal.rows import DropAlarm, PutAlarm

DAY_S = 86400
CHUNK = 2000  # events per commit

# The journals compared, by the retention each runs. Every one keeps the size cap out of it
# (a year of these events stays under the default 512 MiB only with retention).
MODES: dict[str, dict[str, Any] | None] = {
    "none": None,  # nothing is ever deleted
    # What the gateway did before per-kind retention: synced events after `retention_days`.
    "events_only": {"sessions_retention_days": 3660, "audit_retention_days": 3660,
                    "refused_retention_h": 87840},
    "retention": {},  # the defaults of [journal]
}


# --- the day: recorded, or made here ---------------------------------------------------------


def read_day(path: Path) -> list[Event]:
    """The events of a `journal export --format jsonl` file, in its order.

    Raises ValueError for a line that is not one of our CloudEvents.
    """
    day = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                ce = json.loads(line)
                day.append(Event(EventType(ce["type"].removeprefix(TYPE_PREFIX)), ce["id"],
                                 ce["time"], events.dumps(ce["data"])))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{path}:{number}: not an exported event ({e})") from None
    if not day:
        raise ValueError(f"{path} holds no events")
    return day


# The end-to-end lot and its day (hardware-sim/scenarios/e2e-lot.toml, e2e-day.toml).
_ZONE = ZoneInfo("Europe/Berlin")
_DATE = date(2026, 3, 2)
_ARRIVALS = (2, 1, 1, 1, 2, 12, 70, 175, 220, 175, 125, 115,  # mean, by lot-local hour
             125, 115, 115, 125, 150, 140, 100, 80, 55, 35, 18, 9)
_STAY_MIN = (150.0, 120.0, 10.0, 600.0)  # mean, sd, shortest, longest
_MIX = (("permit", 0.2), ("reservation", 0.1), ("visitor", 0.66), ("denied", 0.04))
_PERMITS = 120
_DENIED = 15
_TAILGATE = 0.03
_CAPACITY = 298  # of its 300 bays: a visitor is turned away (no event) when 2 are left
_BAYS = 9  # of the lot's 300, these have sensors
_BAY_CHANGES = 12  # each, in a day
_STANDARD = RateTable.model_validate({
    "currency": "EUR", "grace_minutes": 15, "max_fee_minor": 9000, "lost_ticket_minor": 3000,
    "lines": [{"until_minutes": 60, "flat_minor": 250},
              {"until_minutes": 240, "per_minutes": 30, "amount_minor": 100},
              {"per_minutes": 60, "amount_minor": 150}],
    "daily_cap": {"amount_minor": 1800, "mode": "calendar_day"}})
_CLOCK: events.ClockStatus = {"synchronized": True, "reliable": True}


@dataclass
class _Made:
    """A day being made: its events in the order of their times."""

    rng: random.Random
    start: datetime
    timed: list[tuple[datetime, int, Event]] = field(default_factory=list)
    leaving: list[datetime] = field(default_factory=list)  # a heap: when each car inside leaves
    alarms_until: dict[str, datetime] = field(default_factory=dict)  # raised, by alarm id

    def add(self, event: Event, at: datetime) -> None:
        self.timed.append((at, len(self.timed), event))

    def plate(self) -> str:
        letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
        pick = self.rng.choice
        return (pick(letters) + pick(letters) + f"{self.rng.randrange(1000):03d}"
                + pick(letters) + pick(letters))


def generate_day(seed: int = 11, traffic: float = 1.0) -> list[Event]:
    """A day of the end-to-end lot made without the simulator, `seed` making it the same;
    `traffic` scales its arrivals (0.5: half as many cars).

    Stays that end after midnight end early in the day instead, closing the session that the
    previous day opened (its id a day earlier): the day repeats with cars inside overnight.
    """
    start = datetime.combine(_DATE, datetime.min.time(), _ZONE).astimezone(UTC)
    made = _Made(random.Random(seed), start)
    permits = [made.plate() for _ in range(_PERMITS)]
    denied = [made.plate() for _ in range(_DENIED)]
    hourly = [[0, 0] for _ in range(24)]  # entries, exits
    for at in _arrivals(made, traffic):
        kind = _kind(made.rng.random())
        lane = made.rng.choice(("entry-a", "entry-b"))
        if kind == "denied":
            made.add(events.violation_detected(
                at=at, kind="deny_listed", lane_id=lane, plate=made.rng.choice(denied),
                details={"reason": "stolen vehicle"}), at)
            continue
        while made.leaving and made.leaving[0] <= at:
            heapq.heappop(made.leaving)
        if kind == "visitor" and len(made.leaving) >= _CAPACITY:
            continue  # the lot is full
        plate = made.rng.choice(permits) if kind == "permit" else made.plate()
        _gate(made, lane, at)
        _stay(made, kind, plate, lane, at + timedelta(seconds=2), hourly)
        if made.rng.random() < _TAILGATE:  # a second car under the same opening
            _tailgater(made, lane, at + timedelta(seconds=4), hourly)
    _bays(made)
    _occupancy(made, hourly)
    return [event for _, _, event in sorted(made.timed)]


def _arrivals(made: _Made, traffic: float) -> Iterable[datetime]:
    for hour, mean in enumerate(_ARRIVALS):
        rate = mean * traffic / 3600
        t = made.rng.expovariate(rate)
        while t < 3600:
            yield made.start + timedelta(seconds=hour * 3600 + t)
            t += made.rng.expovariate(rate)


def _kind(draw: float) -> str:
    for kind, share in _MIX:
        if draw < share:
            return kind
        draw -= share
    return _MIX[-1][0]


def _gate(made: _Made, lane: str, at: datetime) -> None:
    gate = f"{lane}-barrier"
    made.add(events.gate_opened(at=at, lane_id=lane, gate_id=gate, reason="decision"), at)
    shut = at + timedelta(seconds=8)
    made.add(events.gate_closed(at=shut, lane_id=lane, gate_id=gate, reason="vehicle_passed"),
             shut)


def _stay(made: _Made, kind: str, plate: str, lane: str, entry: datetime,
          hourly: list[list[int]]) -> None:
    """A car's session from its entry to its exit; one that leaves tomorrow leaves today
    instead, from yesterday's session (its id a day earlier)."""
    rng = made.rng
    session = events.uuid7()
    right: events.Right = {"kind": "visitor"}
    if kind == "permit":
        right = {"kind": "permit", "reference": f"permit-{rng.randrange(_PERMITS)}"}
    elif kind == "reservation":
        right = {"kind": "reservation", "reference": f"res-{rng.randrange(100)}"}
    table = "free" if kind == "permit" else "standard"
    credentials: list[events.Credential] = [
        {"type": "licensePlate", "identifier": plate, "confidence": 1.0}]
    made.add(events.session_started(
        at=entry, session_id=session, lane_id=lane, actual_start=entry,
        credentials=credentials, segments=[events.segment(start=entry, rate_table_id=table)],
        right=right, clock=_CLOCK, vehicle={"plate": plate}), entry)
    hourly[_hour(made, entry)][0] += 1
    mean, sd, shortest, longest = _STAY_MIN
    minutes = min(max(rng.gauss(mean, sd), shortest), longest)
    leave = entry + timedelta(minutes=minutes)
    heapq.heappush(made.leaving, leave)
    if leave >= made.start + timedelta(days=1):
        leave -= timedelta(days=1)
        entry -= timedelta(days=1)
        session = shift_token(session, -1)
    fee = (free_quote("EUR", "permit: free") if kind == "permit"
           else quote(_STANDARD, entry, leave, tz=_ZONE))
    transactions: list[events.FinancialTransaction] = []
    if fee.amount_minor > 0:
        paid = leave - timedelta(minutes=rng.uniform(5, 20))
        payment = f"pay-{session}"
        amount: events.Money = {"amountMinor": fee.amount_minor, "currency": "EUR"}
        made.add(events.payment_recorded(
            at=paid, payment_id=payment, session_id=session, amount=amount, method="card",
            source="pay_station", valid_until=paid + timedelta(minutes=30)), paid)
        transactions.append({"type": "payment", "amount": amount, "reference": payment})
    _gate(made, "exit", leave)
    end = leave + timedelta(seconds=2)
    made.add(events.session_ended(
        at=end, session_id=session, lane_id="exit", actual_start=entry, actual_end=end,
        duration_seconds=int((end - entry).total_seconds()),
        credentials=[{"type": "licensePlate", "identifier": plate}],
        segments=[events.segment(start=entry, end=end, rate_table_id=table,
                                 amount={"amountMinor": fee.amount_minor, "currency": "EUR"})],
        right=right, clock=_CLOCK, currency="EUR", fee_lines=fee.fee_lines(),
        vehicle={"plate": plate}, transactions=transactions), end)
    hourly[_hour(made, end)][1] += 1


def _tailgater(made: _Made, lane: str, at: datetime, hourly: list[list[int]]) -> None:
    """A second car under one opening: the violation, the lane's alarm, and its own session."""
    plate = made.plate()
    made.add(events.violation_detected(at=at, kind="tailgating", lane_id=lane, plate=plate,
                                       details={"vehiclesUnderOneOpening": 2}), at)
    alarm = f"lane.tailgating:{lane}"
    if at >= made.alarms_until.get(alarm, at):  # raised once while active, cleared later
        made.add(events.alarm_raised(
            at=at, alarm_id=alarm, code="lane.tailgating", severity="warning",
            message=f"2 vehicles passed under one opening at {lane}", component="lane",
            details={"plate": plate}), at)
        cleared = made.alarms_until[alarm] = at + timedelta(minutes=made.rng.uniform(1, 5))
        made.add(events.alarm_cleared(
            at=cleared, alarm_id=alarm, code="lane.tailgating", severity="info",
            message="normal passage", component="lane"), cleared)
    _stay(made, "visitor", plate, lane, at, hourly)


def _bays(made: _Made) -> None:
    for n in range(1, _BAYS + 1):
        state: events.BayState = "unknown"
        for second in sorted(made.rng.uniform(0, DAY_S) for _ in range(_BAY_CHANGES)):
            at = made.start + timedelta(seconds=second)
            new: events.BayState = "occupied" if state != "occupied" else "free"
            made.add(events.bay_changed(
                at=at, bay_id=f"E-{n:03d}", floor="0", zone="A", bay_type="regular",
                state=new, previous_state=state, source="magnetic", sensor_healthy=True), at)
            state = new


def _occupancy(made: _Made, hourly: list[list[int]]) -> None:
    for hour, (entries, exits) in enumerate(hourly):
        begin = made.start + timedelta(hours=hour)
        end = begin + timedelta(hours=1)
        made.add(events.occupancy_hourly(
            at=end, hour_start=begin, hour_end=end, entries=entries, exits=exits,
            groups=[{"floor": "0", "zone": "A", "bayType": "regular", "capacity": _BAYS,
                     "occupiedAvg": round(made.rng.uniform(0, _BAYS), 3),
                     "occupiedMax": made.rng.randrange(_BAYS + 1), "unknownMax": 0}]), end)


def _hour(made: _Made, at: datetime) -> int:
    return int((at - made.start).total_seconds() // 3600) % 24


# --- moving a day on ---------------------------------------------------------------------------

# What changes from one day to the next in a stored string: dates, and ids (UUIDs).
_TOKEN = re.compile(r"\d{4}-\d\d-\d\d(?=T\d\d:)"
                    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MS_PER_DAY = DAY_S * 1000


def shift_token(token: str, days: int) -> str:
    """A date `days` later, or a UUID as if made `days` later (its 48-bit millisecond time,
    that of a UUIDv7, moved on): the same token always gives the same one."""
    if len(token) == 10:
        return (date.fromisoformat(token) + timedelta(days=days)).isoformat()
    ms = f"{(int(token[:8] + token[9:13], 16) + days * _MS_PER_DAY) % (1 << 48):012x}"
    return f"{ms[:8]}-{ms[8:]}{token[13:]}"


Template = str | tuple[str, ...]  # a string, or its parts: text, token, text, token, ..., text


def template(value: str) -> Template:
    """`value` cut at its tokens, once, so that each day only puts in their shifted forms."""
    parts: list[str] = []
    last = 0
    for match in _TOKEN.finditer(value):
        parts += [value[last:match.start()], match.group()]
        last = match.end()
    return value if not parts else (*parts, value[last:])


class _Shifted(dict[str, str]):
    """Each token as it reads `days` later, worked out once a day."""

    def __init__(self, days: int) -> None:
        super().__init__()
        self.days = days

    def __missing__(self, token: str) -> str:
        value = self[token] = shift_token(token, self.days)
        return value

    def render(self, value: object) -> Any:
        if type(value) is not tuple:
            return value
        parts = list(value)
        parts[1::2] = [self[token] for token in value[1::2]]
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class _Unit:
    """One event and the state it reports, as templates."""

    changes: tuple[tuple[type[_Row], tuple[object, ...]], ...]
    event: tuple[EventType, Template, Template, Template]

    @classmethod
    def of(cls, event: Event) -> _Unit:
        return cls(tuple((type(c), tuple(template(v) if isinstance(v, str) else v
                                          for v in astuple(c)))
                         for c in state_of(event)),
                   (event.type, template(event.id), template(event.time),
                    template(event.data_json)))

    def on(self, day: _Shifted) -> tuple[Sequence[Change], Event]:
        render = day.render
        changes = [kind(*map(render, fields)) for kind, fields in self.changes]
        type_, id_, time_, data = self.event
        return changes, Event(type_, render(id_), render(time_), render(data))


_Row = OpenSession | CloseSession | RecordPayment | SetBayState | PutAlarm | DropAlarm


def state_of(event: Event) -> list[_Row]:
    """The rows the daemon writes with `event`, as far as the event tells them."""
    d = event.data
    match event.type:
        case EventType.SESSION_STARTED:
            plate = d.get("identifiedVehicle", {}).get("plate")
            return [OpenSession(d["sessionId"], plate, d["right"]["kind"],
                                d["right"].get("reference"), d["laneId"], d["actualStart"],
                                0.0, "replay", d["clock"]["synchronized"])]
        case EventType.SESSION_ENDED:
            return [CloseSession(d["sessionId"], d["laneId"], d["actualEnd"], 0.0, "replay",
                                 d["clock"]["synchronized"], float(d["durationSeconds"]),
                                 d["clock"]["reliable"], d["fee"]["amountMinor"],
                                 d["fee"]["currency"])]
        case EventType.PAYMENT_RECORDED:
            return [RecordPayment(d["paymentId"], d["sessionId"], d["amount"]["amountMinor"],
                                  d["amount"]["currency"], d["method"], d["source"],
                                  event.time, d.get("validUntil"))]
        case EventType.BAY_CHANGED:
            return [SetBayState(d["bayId"], d["state"], event.time, d["source"],
                                d["sensorHealthy"])]
        case EventType.ALARM_RAISED:
            return [PutAlarm(d["alarmId"], d["severity"], d["message"],
                             events.dumps(d["details"]), d["component"], event.time)]
        case EventType.ALARM_CLEARED:
            return [DropAlarm(d["alarmId"])]
    return []


# --- the run -----------------------------------------------------------------------------------


async def retention_bench(directory: Path, *, days: int = 365, every: int = 30,
                          day: Sequence[Event] | None = None, traffic: float = 1.0
                          ) -> dict[str, Any]:
    """Write `days` days of `day` (default: `generate_day(traffic=traffic)`) into one journal
    per mode of `MODES`; return the files' sizes every `every` days and at the end."""
    if days < 1 or every < 1 or traffic <= 0:
        raise ValueError("days and every must be at least 1, and traffic above 0")
    source = "recorded" if day is not None else "generated"
    day = list(day) if day is not None else generate_day(traffic=traffic)
    units = [_Unit.of(event) for event in day]
    first = datetime.fromisoformat(min(e.time for e in day))
    last = datetime.fromisoformat(max(e.time for e in day))
    clock = FakeClock(first)
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    journals = {name: await Journal.open(_settings(directory / f"{name}.db", overrides),
                                         clock=clock)
                for name, overrides in MODES.items()}
    sizes: list[dict[str, Any]] = []
    pruning = 0.0
    began = time.perf_counter()
    try:
        for d in range(days):
            rows = [unit.on(_Shifted(d)) for unit in units]
            # The journals write on threads of their own: their fsyncs overlap.
            await asyncio.gather(*(_write_day(j, rows) for j in journals.values()))
            clock.advance(max(0.0, (last + timedelta(days=d) - clock.now()).total_seconds()))
            t = time.perf_counter()
            await asyncio.gather(*(_prune_all(journals[name]) for name, overrides in MODES.items()
                                   if overrides is not None))
            pruning += time.perf_counter() - t
            if (d + 1) % every == 0 or d + 1 == days:
                sizes.append(await _sizes(d + 1, journals))
        elapsed = time.perf_counter() - began
        held = {name: _held(await journal.stats()) for name, journal in journals.items()}
    finally:
        for journal in journals.values():
            await journal.close()
    return {"days": days, "day": source, "events_per_day": len(day),
            "sessions_per_day": sum(e.type is EventType.SESSION_STARTED for e in day),
            "modes": {name: _describe(overrides) for name, overrides in MODES.items()},
            "sizes": sizes, "held": held, "seconds": round(elapsed, 1),
            "pruning_seconds": round(pruning, 1)}


def _settings(path: Path, overrides: dict[str, Any] | None) -> JournalConfig:
    # No maintenance of its own (the run prunes when a day is done), no ballast file, and no
    # size cap: the figures are what retention alone keeps.
    return JournalConfig(path=path, maintenance_interval_s=86400, reserve_mb=0, min_free_mb=0,
                         max_size_mb=1_048_576, **(overrides or {}))


async def _write_day(journal: Journal, rows: Sequence[tuple[Sequence[Change], Event]]) -> None:
    """A day's rows, `CHUNK` events a commit; then the backend confirms them all."""
    after = journal.last_seq
    for i in range(0, len(rows), CHUNK):
        chunk = rows[i:i + CHUNK]
        await journal.commit([c for changes, _ in chunk for c in changes],
                             [event for _, event in chunk])
    await journal.mark_acked(range(after + 1, journal.last_seq + 1))


async def _prune_all(journal: Journal) -> None:
    """Maintenance runs until nothing more has expired, as a day of them every minute does."""
    for _ in range(1000):
        pruned = await journal.prune()
        if not any(n for key, n in pruned.items() if key != "used_bytes"):
            return


async def _sizes(day: int, journals: dict[str, Journal]) -> dict[str, Any]:
    """Each journal's pages in use (its file once the WAL is checkpointed into it: free pages
    are given back), and its files as they are on disk (the WAL holds up to a few MiB more)."""
    stats = {name: await journal.stats() for name, journal in journals.items()}
    return {"day": day, "bytes": {name: s.size_bytes for name, s in stats.items()},
            "file_bytes": {name: s.file_bytes for name, s in stats.items()}}


def _held(stats: JournalStats) -> dict[str, int]:
    return {"events": stats.events_total, "sessions_closed": stats.sessions_closed,
            "sessions_open": stats.sessions_open}


def _describe(overrides: dict[str, Any] | None) -> str:
    if overrides is None:
        return "nothing deleted"
    s = _settings(Path("journal.db"), overrides)
    return (f"synced events {s.retention_days} d, refused plates"
            f" {s.refused_retention_h / 24:g} d, closed sessions {s.sessions_retention_days} d,"
            f" audit {s.audit_retention_days} d")
