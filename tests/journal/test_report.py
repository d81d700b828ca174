"""`report --day`: hourly occupancy and revenue from a real journal, as a table, JSON and a PNG."""

from __future__ import annotations

import asyncio
import json
import struct
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from gateway.cli import cli
from gateway.config import JournalConfig
from gateway.core import events
from gateway.core.clock import FakeClock
from gateway.journal import Journal, OutboxRecord
from gateway.journal import report as reports

BERLIN = ZoneInfo("Europe/Berlin")
DAY = date(2026, 3, 2)  # a Monday, CET (UTC+1): local midnight is 23:00 UTC the day before


def _local(hour: int, minute: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=BERLIN)


def _roll_up(hour_start_local: datetime, occupied_avg: float, occupied_max: int,
             entries: int = 0, exits: int = 0) -> events.Event:
    start = hour_start_local.astimezone(UTC)
    groups: list[events.OccupancyGroup] = [
        {"floor": "0", "zone": "A", "bayType": "regular", "capacity": 8,
         "occupiedAvg": occupied_avg * 0.75, "occupiedMax": round(occupied_max * 0.75),
         "unknownMax": 0},
        {"floor": "1", "zone": "B", "bayType": "ev", "capacity": 2,
         "occupiedAvg": occupied_avg * 0.25, "occupiedMax": round(occupied_max * 0.25),
         "unknownMax": 0},
    ]
    return events.occupancy_hourly(at=start + timedelta(hours=1), hour_start=start,
                                   hour_end=start + timedelta(hours=1), entries=entries,
                                   exits=exits, groups=groups)


def _ended(exit_local: datetime, fee_minor: int, n: int) -> events.Event:
    entry = exit_local - timedelta(hours=2)
    return events.session_ended(
        at=exit_local, session_id=f"s-{n}", lane_id="exit", actual_start=entry,
        actual_end=exit_local, duration_seconds=7200,
        credentials=[{"type": "licensePlate", "identifier": f"AB{n:03d}"}],
        segments=[events.segment(start=entry, end=exit_local)],
        right={"kind": "visitor"}, clock={"synchronized": True, "reliable": True},
        currency="EUR", fee_lines=[{"code": "tier", "description": "2 h",
                                    "amountMinor": fee_minor}])


def _paid(at_local: datetime, amount_minor: int, n: int) -> events.Event:
    return events.payment_recorded(at=at_local, payment_id=f"p-{n}", session_id=f"s-{n}",
                                   amount={"amountMinor": amount_minor, "currency": "EUR"},
                                   method="card", source="pay_station")


def _day_events() -> list[events.Event]:
    return [
        _roll_up(_local(0, 0, DAY - timedelta(days=1)), 9.0, 10),  # the day before: not counted
        _roll_up(_local(8), 2.0, 4, entries=5, exits=1),
        _roll_up(_local(9), 5.0, 7, entries=4, exits=2),
        _roll_up(_local(17), 8.0, 10, entries=1, exits=6),
        _paid(_local(8, 50), 450, 1),
        _ended(_local(9, 5), 450, 1),
        _ended(_local(9, 40), 250, 2),
        _paid(_local(17, 10), 1200, 3),
        _ended(_local(17, 15), 1200, 3),
        _ended(_local(0, 30, DAY + timedelta(days=1)), 999, 4),  # the next day
    ]


@pytest.fixture
def day_journal(tmp_path: Path) -> Path:
    """A journal file holding the day's events (closed: the CLI runs its own event loop)."""
    path = tmp_path / "journal.db"

    async def build() -> None:
        journal = await Journal.open(JournalConfig(path=path, maintenance_interval_s=3600),
                                     clock=FakeClock())
        try:
            await journal.commit([], _day_events())
        finally:
            await journal.close()

    asyncio.run(build())
    return path


CONFIG = """
[gateway]
lot_id = "riverside"
gateway_id = "gw-1"
timezone = "Europe/Berlin"
default_tariff = "standard"

[journal]
path = "{journal}"

[tariffs.standard]
currency = "EUR"
lines = [{{ flat_minor = 100 }}]
"""


@pytest.fixture
def config(day_journal: Path, tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG.format(journal=day_journal))
    return path


def _records(evs: list[events.Event]) -> list[OutboxRecord]:
    return [OutboxRecord(i + 1, e.id, e.type.value, e.time, e.data_json, False)
            for i, e in enumerate(evs)]


def test_hours_are_lot_local_and_dst_days_have_23_or_25():
    assert [h.label for h in reports.day_hours(DAY, BERLIN)][:3] == ["00:00", "01:00", "02:00"]
    assert reports.day_hours(DAY, BERLIN)[0].start == datetime(2026, 3, 1, 23, tzinfo=UTC)
    assert len(reports.day_hours(date(2026, 3, 29), BERLIN)) == 23
    autumn = reports.day_hours(date(2026, 10, 25), BERLIN)
    assert len(autumn) == 25
    assert [h.label for h in autumn][2:4] == ["02:00 +0200", "02:00 +0100"]


def test_summary_folds_the_day_into_hours():
    result = reports.summarise(_records(_day_events()), DAY, BERLIN, lot_id="lot-1")
    by_label = {h.label: h for h in result.hours}
    nine = by_label["09:00"]
    assert (nine.capacity, nine.occupied_avg, nine.occupied_max) == (10, 5.0, 7)
    assert nine.occupancy == pytest.approx(0.5)
    assert (nine.entries, nine.exits) == (4, 2)
    assert (nine.sessions_ended, nine.fees_minor) == (2, 700)
    assert by_label["08:00"].payments_minor == 450
    assert by_label["17:00"].fees_minor == 1200
    assert by_label["12:00"].occupancy is None  # no roll-up: no data, not zero
    totals = result.totals()
    assert totals["fees_minor"] == 1900  # the next day's exit is not in it
    assert totals["payments_minor"] == 1650
    assert totals["sessions_ended"] == 3
    assert totals["occupancy"] == pytest.approx(15 / 30)
    assert totals["occupied_max"] == 10
    assert result.currency == "EUR"
    assert result.money(1900) == "19.00 EUR"


def test_a_day_with_nothing_says_so():
    result = reports.summarise([], DAY, BERLIN, lot_id="lot-1")
    assert result.totals()["fees_minor"] == 0
    assert any("no hourly occupancy" in note for note in result.notes)


def test_a_day_not_over_says_so():
    result = reports.summarise([], DAY, BERLIN, lot_id="lot-1", now=_local(12))
    assert any("not over" in note for note in result.notes)


def test_an_unreadable_event_is_skipped_not_fatal():
    good = _records([_ended(_local(10), 300, 1)])
    bad = OutboxRecord(99, "x", "session.ended", "2026-03-02T10:00:00Z", '{"fee": 1}', False)
    result = reports.summarise([bad, *good], DAY, BERLIN, lot_id="lot-1")
    assert result.totals()["fees_minor"] == 300


def test_a_second_currency_is_left_out_and_noted():
    usd = _records([_ended(_local(10), 300, 1)])[0]
    usd = OutboxRecord(1, usd.id, usd.type, usd.time, usd.data_json.replace("EUR", "USD"), False)
    eur = _records([_ended(_local(11), 500, 2)])[0]
    result = reports.summarise([eur, usd], DAY, BERLIN, lot_id="lot-1")
    assert result.totals()["fees_minor"] == 500
    assert any("USD" in note for note in result.notes)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_report_command_writes_the_png_and_prints_the_table(config, tmp_path):
    png = tmp_path / "day.png"
    result = CliRunner().invoke(cli, ["report", "--day", "2026-03-02", "--config", str(config),
                                      "--output", str(png)])
    assert result.exit_code == 0, result.output
    assert "riverside on 2026-03-02 (Europe/Berlin)" in result.stdout
    assert "7.00 EUR" in result.stdout  # 09:00's fees
    assert "19.00 EUR" in result.stdout  # the day's fees
    assert _png_size(png) == (1100, 750)


def test_report_json_without_a_config_is_in_utc(day_journal):
    result = CliRunner().invoke(cli, ["report", "--day", "2026-03-02", "--journal",
                                      str(day_journal), "--no-png", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["png"] is None
    assert data["timezone"] == "UTC"
    # UTC's 2 March holds the Berlin day but for its first hour, and the next day's first.
    assert data["totals"]["fees_minor"] == 1900 + 999
    assert len(data["hours"]) == 24


def test_report_without_matplotlib_names_the_extra(day_journal, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    result = CliRunner().invoke(cli, ["report", "--day", "2026-03-02", "--journal",
                                      str(day_journal), "--output", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert "parking-gateway[sim]" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_report_rejects_a_bad_day(tmp_path):
    result = CliRunner().invoke(cli, ["report", "--day", "2026-02-30", "--journal",
                                      str(tmp_path / "j.db")])
    assert result.exit_code == 2
    assert "not a date" in result.stderr


def test_report_on_a_missing_journal_is_operational(tmp_path):
    result = CliRunner().invoke(cli, ["report", "--day", "2026-03-02", "--journal",
                                      str(tmp_path / "none.db"), "--no-png"])
    assert result.exit_code == 1
    assert "no journal" in result.stderr
