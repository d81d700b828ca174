"""A day of the lot, hour by hour, from the journal: occupancy and revenue, as a table and a PNG.

Sources, all in the outbox:

* `occupancy.hourly`: the occupancy roll-up the daemon journals at the end of each clock hour
  (time-weighted mean and peak of occupied bays, per floor, zone and type; entries, exits);
* `session.ended`: the fee of every session, counted in the hour the vehicle left;
* `payment.recorded`: money received (pay station, backend), in the hour it was recorded.

Hours are lot-local, so a DST day has 23 or 25 of them. The journal keeps synced events for
`journal.retention_days`: an older day has no data left here (the backend has it).
matplotlib (the `sim` extra) is imported only to draw the PNG.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from gateway.core.tariff import money
from gateway.journal import JournalReader, OutboxRecord

log = structlog.get_logger(__name__)

HOUR = timedelta(hours=1)
WANTED = frozenset({"occupancy.hourly", "session.ended", "payment.recorded"})


class MissingExtra(Exception):
    """An optional dependency is not installed; the message names the extra that has it."""


@dataclass(slots=True)
class HourRow:
    start: datetime  # UTC
    label: str  # lot-local "HH:00", with the UTC offset on a DST day's repeated hour
    capacity: int = 0  # bays in service, from the roll-up
    occupied_avg: float = 0.0
    occupied_max: int = 0
    has_occupancy: bool = False  # a roll-up covers this hour
    entries: int = 0
    exits: int = 0
    sessions_ended: int = 0
    fees_minor: int = 0
    payments_minor: int = 0

    @property
    def occupancy(self) -> float | None:
        """Mean share of the bays in service that were taken; None without a roll-up."""
        if not self.has_occupancy or self.capacity == 0:
            return None
        return self.occupied_avg / self.capacity


@dataclass(slots=True)
class DayReport:
    lot_id: str
    day: date
    timezone: str
    hours: list[HourRow]
    currency: str | None = None
    notes: list[str] = field(default_factory=list)

    def money(self, amount_minor: int) -> str:
        return money(amount_minor, self.currency) if self.currency else str(amount_minor)

    def totals(self) -> dict[str, Any]:
        covered = [h for h in self.hours if h.has_occupancy]
        capacity = sum(h.capacity for h in covered)
        return {
            "occupancy": sum(h.occupied_avg for h in covered) / capacity if capacity else None,
            "occupied_max": max((h.occupied_max for h in covered), default=0),
            "entries": sum(h.entries for h in self.hours),
            "exits": sum(h.exits for h in self.hours),
            "sessions_ended": sum(h.sessions_ended for h in self.hours),
            "fees_minor": sum(h.fees_minor for h in self.hours),
            "payments_minor": sum(h.payments_minor for h in self.hours),
        }

    def as_dict(self) -> dict[str, Any]:
        hours = []
        for h in self.hours:
            row = asdict(h)
            row["start"] = h.start.isoformat().replace("+00:00", "Z")
            row["occupancy"] = h.occupancy
            hours.append(row)
        return {"lot_id": self.lot_id, "day": self.day.isoformat(), "timezone": self.timezone,
                "currency": self.currency, "hours": hours, "totals": self.totals(),
                "notes": self.notes}


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def day_hours(day: date, tz: ZoneInfo) -> list[HourRow]:
    """The lot-local day's hours, as UTC hour starts with local labels (23 to 25 of them)."""
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    hours, at = [], start
    while at < end:
        local = at.astimezone(tz)
        hours.append(HourRow(at, local.strftime("%H:00")))
        at += HOUR
    labels = [h.label for h in hours]
    for h in hours:  # autumn's repeated hour: tell the two apart by their offset
        if labels.count(h.label) > 1:
            h.label += h.start.astimezone(tz).strftime(" %z")
    return hours


def summarise(records: Iterable[OutboxRecord], day: date, tz: ZoneInfo, *, lot_id: str,
              now: datetime | None = None) -> DayReport:
    """Fold the journal's events into the day's hours. Pure: the caller reads the journal."""
    result = DayReport(lot_id, day, str(tz), day_hours(day, tz))
    first, last = result.hours[0].start, result.hours[-1].start + HOUR
    other_currencies: set[str] = set()
    for record in records:
        if record.type not in WANTED:
            continue
        try:
            data = json.loads(record.data_json)
            at, amount = _when_and_amount(record, data)
        except (ValueError, KeyError, TypeError) as e:
            log.warning("report.unreadable_event", seq=record.seq, type=record.type, error=str(e))
            continue
        if not first <= at < last:
            continue
        row = result.hours[int((at - first) / HOUR)]
        if record.type == "occupancy.hourly":
            _add_roll_up(row, data)
            continue
        currency = str(amount["currency"])
        if result.currency is None:
            result.currency = currency
        if currency != result.currency:
            other_currencies.add(currency)
            continue
        if record.type == "session.ended":
            row.sessions_ended += 1
            row.fees_minor += int(amount["amountMinor"])
        else:
            row.payments_minor += int(amount["amountMinor"])
    _add_notes(result, other_currencies, now)
    return result


def _when_and_amount(record: OutboxRecord, data: Mapping[str, Any]
                     ) -> tuple[datetime, Mapping[str, Any]]:
    if record.type == "occupancy.hourly":
        return _instant(data["hourStart"]), {}
    if record.type == "session.ended":
        return _instant(data["actualEnd"]), data["fee"]
    return _instant(record.time), data["amount"]  # a payment counts when it was recorded


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _add_roll_up(row: HourRow, data: Mapping[str, Any]) -> None:
    """A roll-up per hour is usual; two (a restart within the hour) are added up by weight."""
    groups = data.get("groups") or []
    capacity = sum(int(g["capacity"]) for g in groups)
    occupied = sum(float(g["occupiedAvg"]) for g in groups)
    # Group peaks need not coincide: their sum is an upper bound, capped by the capacity.
    peak = min(sum(int(g["occupiedMax"]) for g in groups), capacity)
    if row.has_occupancy:  # a second roll-up for the hour (a restart): keep the larger view
        row.occupied_avg = max(row.occupied_avg, occupied)
        row.capacity = max(row.capacity, capacity)
        row.occupied_max = max(row.occupied_max, peak)
    else:
        row.capacity, row.occupied_avg, row.occupied_max = capacity, occupied, peak
    row.has_occupancy = True
    row.entries += int(data.get("entries", 0))
    row.exits += int(data.get("exits", 0))


def _add_notes(result: DayReport, other_currencies: set[str], now: datetime | None) -> None:
    if other_currencies:
        result.notes.append(f"amounts in {', '.join(sorted(other_currencies))} are left out"
                            f" (the day is reported in {result.currency})")
    if not any(h.has_occupancy for h in result.hours):
        result.notes.append("no hourly occupancy in the journal for this day (the daemon"
                            " journals each hour as it ends; synced events are kept for"
                            " journal.retention_days)")
    if now is not None and now < result.hours[-1].start + HOUR:
        result.notes.append("the day is not over: later hours have no data yet")


async def read_day(path: Path, day: date, tz: ZoneInfo, *, lot_id: str,
                   now: datetime | None = None) -> DayReport:
    """The day's report from the journal at `path` (read-only; safe while the daemon runs)."""
    reader = await JournalReader.open(path)
    try:
        records = [r async for r in reader.iter_events() if r.type in WANTED]
    finally:
        await reader.close()
    return summarise(records, day, tz, lot_id=lot_id, now=now)


# --- the chart -----------------------------------------------------------------------------


def render_png(report: DayReport, path: Path) -> None:
    """Occupancy (mean and peak, % of bays in service) above revenue per hour; raises
    `MissingExtra` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a gateway
        import matplotlib.pyplot as plt
        from matplotlib.ticker import PercentFormatter
    except ImportError:
        raise MissingExtra("the report's chart needs matplotlib: pip install"
                           " 'parking-gateway[sim]' (or use --no-png for the table only)"
                           ) from None
    xs = list(range(len(report.hours)))
    labels = [h.label[:2] for h in report.hours]
    mean = [h.occupancy * 100 if h.occupancy is not None else float("nan")
            for h in report.hours]
    peak = [h.occupied_max / h.capacity * 100 if h.has_occupancy and h.capacity
            else float("nan") for h in report.hours]
    scale = 10 ** _digits(report.currency)
    fees = [h.fees_minor / scale for h in report.hours]
    payments = [h.payments_minor / scale for h in report.hours]

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    try:
        totals = report.totals()
        share = "-" if totals["occupancy"] is None else f"{totals['occupancy'] * 100:.0f}%"
        fig.suptitle(f"{report.lot_id} on {report.day:%A %d %B %Y} ({report.timezone})",
                     fontsize=14, fontweight="bold")
        top.set_title(f"occupancy: {share} on average, peak {totals['occupied_max']} bays;"
                      f" {totals['entries']} entries, {totals['exits']} exits",
                      fontsize=10, loc="left")
        # Bars: an hour without a roll-up (the daemon was down, the day is not over) is a gap.
        top.bar(xs, mean, 0.8, color="tab:blue", alpha=0.7, label="mean occupied")
        top.plot(xs, peak, "_", color="tab:red", markersize=14, markeredgewidth=2.5,
                 label="peak")
        top.axhline(100, color="grey", linewidth=0.8, linestyle="--")
        top.set_ylim(0, 120)  # room above 100% for the legend
        top.set_yticks(range(0, 101, 20))
        top.yaxis.set_major_formatter(PercentFormatter())
        top.set_ylabel("bays in service taken")
        top.grid(axis="y", alpha=0.3)
        top.legend(loc="upper left", ncols=2, frameon=False)

        width = 0.4
        bottom.bar([x - width / 2 for x in xs], fees, width, color="tab:green",
                   label="fees of sessions ended")
        bottom.bar([x + width / 2 for x in xs], payments, width, color="tab:olive",
                   label="payments recorded")
        unit = report.currency or "amount"
        bottom.set_title(f"revenue: {report.money(totals['fees_minor'])} in fees,"
                         f" {report.money(totals['payments_minor'])} paid,"
                         f" {totals['sessions_ended']} sessions ended", fontsize=10, loc="left")
        bottom.set_ylabel(unit)
        bottom.set_ylim(0, max([*fees, *payments, 1.0]) * 1.3)  # room for the legend
        bottom.grid(axis="y", alpha=0.3)
        bottom.legend(loc="upper left", ncols=2, frameon=False)
        bottom.set_xticks(xs, labels)
        bottom.set_xlabel("hour (lot-local)")
        bottom.set_xlim(-0.6, len(xs) - 0.4)
        if report.notes:
            fig.text(0.01, 0.005, "; ".join(report.notes), fontsize=8, color="dimgrey")
        fig.tight_layout(rect=(0, 0.02, 1, 1))
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def _digits(currency: str | None) -> int:
    """Minor-unit digits of a currency, as gateway.core.tariff.money formats it."""
    if currency is None:
        return 0
    text = money(1, currency).split()[0]
    return len(text.partition(".")[2])
