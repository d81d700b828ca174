"""The technician CLI, run in-process: what it prints, where, and with which exit code."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result

from gateway import __version__
from gateway.bench import journal as benchmarks
from gateway.cli import common
from gateway.cli import journal as journal_cli
from gateway.cli import service as service_cli
from gateway.cli import tariff as tariff_cli
from gateway.cli.main import cli
from gateway.config import JournalConfig, describe, load_settings
from gateway.core import events
from gateway.core.clock import FakeClock
from gateway.core.tariff import quote
from gateway.journal import Journal, JournalError
from tests.conftest import EXAMPLE
from tests.core.schemas import validate_cloudevent

SECRET = "hunter2-never-printed"

MINIMAL = """
[gateway]
lot_id = "test-lot"
gateway_id = "gw-1"
timezone = "Europe/Berlin"
default_tariff = "standard"

[journal]
path = "{journal}"
max_size_mb = 64

[sync.mqtt]
username = "gw"
password = "{secret}"

[tariffs.standard]
currency = "EUR"
lines = [{{ flat_minor = 100 }}]
"""

# Five problems in three sections; each must be reported at its own dotted path.
INVALID = """
[gateway]
lot_id = "Bad Lot"
gateway_id = "gw-1"
timezone = "Mars/Olympus"
default_tariff = "standard"
colour = "red"

[[lanes]]
id = "lane-1"
direction = "entry"
name = "Lane 1"
camera = { url = "ftp://camera" }
gpio = { arming_loop = 5, safety_loop = 6, open_relay = 40 }

[tariffs.standard]
currency = "EUR"
lines = [{ flat_minor = 100 }]
"""
INVALID_PATHS = (
    "gateway.lot_id", "gateway.timezone", "gateway.colour", "lanes.0.camera.url",
    "lanes.0.gpio.open_relay",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Any:
    # This machine's own gateway settings must not leak into a test.
    monkeypatch.delenv(common.CONFIG_ENV, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    for name in list(os.environ):
        if name.upper().startswith("PARKING_GATEWAY__"):
            monkeypatch.delenv(name)
    yield
    # The CLI pointed structlog at the runner's stderr, which is gone after the run.
    structlog.reset_defaults()


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


# --- version and help ---------------------------------------------------------------------


def test_version_prints_package_python_and_sqlite_versions() -> None:
    human = run("version")
    machine = run("version", "--json")

    assert human.exit_code == 0
    assert f"parking-gateway {__version__}" in human.stdout
    assert sqlite3.sqlite_version in human.stdout
    assert machine.exit_code == 0
    info = json.loads(machine.stdout)
    assert info["version"] == __version__
    assert info["sqlite"] == sqlite3.sqlite_version
    assert set(info) == {"version", "python", "sqlite", "platform"}


@pytest.mark.parametrize("command", [(), ("tariff", "quote"), ("journal", "export")])
def test_help_documents_exit_codes(command: tuple[str, ...]) -> None:
    result = run(*command, "--help")

    assert result.exit_code == 0
    assert "Exit codes:" in result.stdout
    for line in ("0  success", "1  operational failure", "2  invalid input"):
        assert line in result.stdout


# --- config check ---------------------------------------------------------------------------


def test_config_check_summarises_the_example() -> None:
    result = run("config", "check", EXAMPLE)

    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert f"{EXAMPLE}: valid" in out
    assert "urn:parking:riverside-garage:gw-1" in out
    assert "entry: 2, exit: 1" in out  # lanes by direction
    assert "modbus: 9, none: 1, ultrasonic: 2" in out  # bays by sensor
    assert "staff, standard" in out


def test_config_check_json_is_the_describe_summary() -> None:
    result = run("config", "check", EXAMPLE, "--json")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "valid": True, "config": str(EXAMPLE), "summary": describe(load_settings(EXAMPLE)),
    }


def test_config_check_shows_secrets_only_as_set(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(MINIMAL.format(journal=tmp_path / "j.db", secret=SECRET))

    human = run("config", "check", config)
    machine = run("config", "check", config, "--json")

    assert human.exit_code == machine.exit_code == 0
    assert "mqtt password     set" in human.stdout
    assert json.loads(machine.stdout)["summary"]["sync"]["mqtt"]["password_set"] is True
    for result in (human, machine):
        assert SECRET not in result.output


def test_config_check_reports_every_problem_with_its_path(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(INVALID)

    result = run("config", "check", config)

    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    for path in INVALID_PATHS:
        assert any(line.startswith(f"{path}: ") for line in lines), path
    assert lines[-1] == f"Error: {config}: 5 problems"


def test_config_check_json_lists_the_problems(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(INVALID)

    result = run("config", "check", config, "--json")

    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert [p["path"] for p in report["problems"]] == list(INVALID_PATHS)


def test_config_check_of_a_missing_file_is_invalid_input(tmp_path: Path) -> None:
    result = run("config", "check", tmp_path / "nope.toml")

    assert result.exit_code == 2
    assert "cannot read" in result.stderr


# --- tariff quote ---------------------------------------------------------------------------


def quote_json(*args: str) -> dict[str, Any]:
    result = run("tariff", "quote", "--config", EXAMPLE, "--json", *args)
    assert result.exit_code == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_quote_json_is_the_library_quote() -> None:
    # Tuesday 09:00-11:10 in Berlin, standard tariff: the first hour is a flat 2.50, then
    # 70 minutes of the 60-240 min tier are 3 started half hours at 1.00: 5.50.
    got = quote_json("--entry", "2026-03-03T09:00", "--exit", "2026-03-03T11:10")

    assert got["amount_minor"] == 550
    assert got["currency"] == "EUR"
    settings = load_settings(EXAMPLE)
    tz = settings.gateway.tzinfo
    expected = quote(settings.tariffs["standard"], datetime(2026, 3, 3, 9, 0, tzinfo=tz),
                     datetime(2026, 3, 3, 11, 10, tzinfo=tz), tz=tz)
    assert got == expected.to_json()


def test_naive_times_are_lot_local_and_z_times_utc() -> None:
    # 21:00-21:50 lot-local is before the 22:00 night band: the first hour's 2.50.
    local = quote_json("--entry", "2026-03-03T21:00", "--exit", "2026-03-03T21:50")
    # 21:00Z is 22:00 in Berlin (CET, +01:00): inside the night band, a flat 4.00.
    utc = quote_json("--entry", "2026-03-03T21:00Z", "--exit", "2026-03-03T21:50Z")
    offset = quote_json("--entry", "2026-03-03T22:00+01:00", "--exit", "2026-03-03T22:50+01:00")

    assert local["amount_minor"] == 250
    assert utc["amount_minor"] == 400
    assert utc == offset


def test_a_naive_time_in_the_dst_gap_is_the_instant_of_the_jump() -> None:
    # Berlin skips 02:00-03:00 on 2026-03-29; the tariff reads 02:30 as the jump, 01:00Z.
    got = quote_json("--entry", "2026-03-29T02:30", "--exit", "2026-03-29T04:00")

    assert got["lines"][0]["start"] == "2026-03-29T01:00:00.000000Z"


@pytest.mark.parametrize(
    ("extra", "amount"),
    [
        # 5.50 less the cinema's 3.00 off.
        (("--validation", "cinema"), 250),
        # The supermarket's 60 free minutes leave 10:00-11:10: 2.50 + one half hour 1.00.
        (("--validation", "supermarket"), 350),
        # Staff park the first 12 hours free.
        (("--tariff", "staff"), 0),
    ],
)
def test_quote_with_tariff_and_validations(extra: tuple[str, ...], amount: int) -> None:
    got = quote_json("--entry", "2026-03-03T09:00", "--exit", "2026-03-03T11:10", *extra)

    assert got["amount_minor"] == amount


def test_lost_ticket_is_the_tariffs_flat_fee() -> None:
    assert quote_json("--lost-ticket")["amount_minor"] == 3000


def test_quote_prints_a_receipt() -> None:
    result = run("tariff", "quote", "--config", EXAMPLE,
                 "--entry", "2026-03-03T09:00", "--exit", "2026-03-03T11:10")

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "  duration  2 h 10 min" in lines
    assert any("first 60 min: flat 2.50 EUR" in line and line.endswith("2.50 EUR")
               for line in lines)
    assert lines[-1].split() == ["total", "5.50", "EUR"]


def test_rich_tables_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "terminal", lambda stream: True)

    result = run("tariff", "quote", "--config", EXAMPLE,
                 "--entry", "2026-03-03T09:00", "--exit", "2026-03-03T11:10")

    assert result.exit_code == 0
    assert "─" in result.stdout  # rich's rule under the header
    assert "5.50 EUR" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--entry", "2026-03-03T09:00", "--exit", "2026-03-03T11:10", "--tariff", "nope"),
         "unknown tariff 'nope' (defined: staff, standard)"),
        (("--entry", "2026-03-03T09:00", "--exit", "2026-03-03T11:10", "--validation", "nope"),
         "unknown validation 'nope'"),
        (("--entry", "2026-03-03T09:00", "--exit", "2026-03-03T08:00"),
         "--exit 2026-03-03 08:00 CET is before --entry 2026-03-03 09:00 CET"),
        (("--entry", "2026-03-32T09:00", "--exit", "2026-03-03T11:10"),
         "is not an ISO 8601 date and time"),
        (("--entry", "2026-03-03T09:00"), "give --entry and --exit"),
        (("--lost-ticket", "--entry", "2026-03-03T09:00"), "leave out --entry"),
        # Issue 20: the message named no tariff ("this tariff has no lost_ticket_minor").
        (("--lost-ticket", "--tariff", "staff"),
         "--lost-ticket: tariff 'staff' has no lost_ticket_minor, so a lost ticket cannot be"
         " priced by it (tariffs with one: standard)"),
        (("--entry", "2026-03-03T09:00", "--exit", "2026-03-03T11:10", "--tariff", "Nope"),
         "unknown tariff 'nope' (defined: staff, standard)"),  # matched in lower case
    ],
)
def test_quote_refuses_bad_input_with_exit_2(args: tuple[str, ...], message: str) -> None:
    result = run("tariff", "quote", "--config", EXAMPLE, "--json", *args)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr
    assert "Traceback" not in result.stderr


PRICED_FROM = "a stay is priced from 1900-01-01 to 9999-01-01 (UTC)"


@pytest.mark.parametrize(
    ("entry", "exit_", "message"),
    [
        # Each was an OverflowError's traceback from the date arithmetic around the stay.
        ("0001-01-01T00:00", "0001-01-02T00:00",
         "0001-01-01T00:00:00 in Europe/Berlin is beyond the calendar's end"),
        ("0001-01-01T12:00", "0001-01-02T12:00", PRICED_FROM),
        ("9999-12-30T10:00", "9999-12-31T12:00", PRICED_FROM),
        ("1901-01-01T00:00", "2026-01-01T00:00",
         "a stay longer than 36,525 days (a century) is not priced"),
    ],
)
def test_quote_beyond_the_calendar_is_one_line_and_exit_2(entry: str, exit_: str,
                                                          message: str) -> None:
    result = run("tariff", "quote", "--config", EXAMPLE, "--entry", entry, "--exit", exit_)

    assert result.exit_code == 2
    assert result.stderr == f"Error: {message}\n"


def test_a_long_quote_shows_its_first_lines_and_says_how_many_more() -> None:
    """A 100-year quote printed 182,623 lines; --json still has every one."""
    args = ("--entry", "2026-01-01T10:00", "--exit", "2026-05-01T10:00")
    every = quote_json(*args)["lines"]
    result = run("tariff", "quote", "--config", EXAMPLE, *args)

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    hidden = len(every) - tariff_cli.SHOWN_LINES
    assert hidden > 300
    assert lines[-2].split() == ["...", "and", f"{hidden:,}", "more", "lines", "(--json", "lists",
                                 "them", "all)"]
    assert len(lines) < tariff_cli.SHOWN_LINES + 12  # and the stay, the header, the total
    assert lines[-1].split()[1] == f"{quote_json(*args)['amount_minor'] / 100:.2f}"


def test_quote_with_an_invalid_config_lists_its_problems(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(INVALID)

    result = run("tariff", "quote", "--config", config, "--lost-ticket")

    assert result.exit_code == 2
    assert "lanes.0.camera.url: " in result.stderr


def test_config_comes_from_the_environment_variable(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(MINIMAL.format(journal=tmp_path / "j.db", secret=SECRET))

    result = CliRunner(env={common.CONFIG_ENV: str(config)}).invoke(
        cli, ["tariff", "quote", "--json", "--entry", "2026-03-03T09:00",
              "--exit", "2026-03-03T10:00"])

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["amount_minor"] == 100  # MINIMAL's flat 1.00


# --- journal --------------------------------------------------------------------------------


async def _fill(path: Path, count: int, acked: int) -> None:
    clock = FakeClock()
    journal = await Journal.open(JournalConfig(path=path), clock=clock)
    try:
        for i in range(count):
            await journal.append(events.bay_changed(
                at=clock.now(), bay_id=f"A-{i:02d}", floor="0", zone="A", bay_type="regular",
                state="occupied", previous_state="free", source="ultrasonic",
                sensor_healthy=True))
            clock.advance(60)
        await journal.mark_acked(range(1, acked + 1))
    finally:
        await journal.close()


def test_stats_json_reads_the_journal_named_by_the_config(
    config_file: Path, journal_file: Path
) -> None:
    result = run("journal", "stats", "--config", config_file, "--json")

    assert result.exit_code == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["path"] == str(journal_file)
    assert stats["events_total"] == 5
    assert stats["events_unsynced"] == 3
    assert stats["acked_through"] == 2
    assert stats["last_seq"] == 5
    assert stats["oldest_unsynced_time"] == "2026-03-02T08:02:00.000000Z"
    assert stats["max_size_bytes"] == 64 * 1024 * 1024  # the config's max_size_mb


def test_stats_human_groups_the_figures(config_file: Path) -> None:
    result = run("journal", "stats", "--config", config_file)

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    for section in ("events", "storage", "sessions", "state"):
        assert section in lines
    assert "  unsynced         3" in lines
    assert any(line.startswith("  used ") and "of 64.0 MiB" in line for line in lines)


def test_tail_shows_the_newest_events_oldest_first(config_file: Path) -> None:
    machine = run("journal", "tail", "--config", config_file, "-n", "2", "--json")
    human = run("journal", "tail", "--config", config_file, "-n", "2")

    assert machine.exit_code == human.exit_code == 0
    records = json.loads(machine.stdout)
    assert [r["seq"] for r in records] == [4, 5]
    assert records[0]["data"]["bayId"] == "A-03"
    assert [r["acked"] for r in records] == [False, False]
    title, header, *rows = human.stdout.splitlines()
    assert title.startswith("last 2 events in ")
    assert header.split()[:3] == ["seq", "time", "(Europe/Berlin)"]
    assert [row.split()[:5] for row in rows] == [  # the lot's time, with its offset
        ["4", "2026-03-02", "09:03:00+01:00", "bay.changed", "false"],
        ["5", "2026-03-02", "09:04:00+01:00", "bay.changed", "false"],
    ]


def test_export_jsonl_is_one_cloudevent_per_line(config_file: Path) -> None:
    result = run("journal", "export", "--config", config_file)

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    for seq, line in enumerate(lines, start=1):
        event = json.loads(line)
        validate_cloudevent(event)
        assert event["source"] == "urn:parking:test-lot:gw-1"
        assert event["seq"] == seq
        assert event["type"] == "org.parking.v1.bay.changed"
    assert result.stderr == "exported 5 events (seq 1 to 5) to stdout\n"


def test_export_after_a_sequence(config_file: Path) -> None:
    result = run("journal", "export", "--config", config_file, "--after", "3")

    assert result.exit_code == 0
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [4, 5]


def test_export_csv_to_a_file(config_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "events.csv"

    result = run("journal", "export", "--config", config_file, "--format", "csv",
                 "--output", target)

    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == f"exported 5 events (seq 1 to 5) to {target}\n"
    with target.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(journal_cli.CSV_COLUMNS)
    assert [row["seq"] for row in rows] == ["1", "2", "3", "4", "5"]
    assert [row["acked"] for row in rows] == ["true", "true", "false", "false", "false"]
    assert json.loads(rows[2]["data"])["bayId"] == "A-02"
    assert rows[2]["type"] == "bay.changed"


def test_export_counts_progress_on_a_terminal(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_cli, "terminal", lambda stream: True)
    monkeypatch.setattr(journal_cli, "PROGRESS_EVERY", 2)
    target = tmp_path / "events.jsonl"

    result = run("journal", "export", "--config", config_file, "--output", target)

    assert result.exit_code == 0
    assert result.stderr == (
        f"\r2 events\r4 events\nexported 5 events (seq 1 to 5) to {target}\n")


def test_journal_option_needs_no_config_but_jsonl_needs_a_source(
    journal_file: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.toml"

    stats = run("journal", "stats", "--config", missing, "--journal", journal_file, "--json")
    no_source = run("journal", "export", "--config", missing, "--journal", journal_file)
    with_source = run("journal", "export", "--config", missing, "--journal", journal_file,
                      "--source", "urn:parking:other-lot:gw-9")
    as_csv = run("journal", "export", "--config", missing, "--journal", journal_file,
                 "--format", "csv")

    assert stats.exit_code == 0
    assert json.loads(stats.stdout)["events_total"] == 5
    assert f"note: not using the config {missing}" in stats.stderr
    assert no_source.exit_code == 2
    assert "give --source" in no_source.stderr
    assert no_source.stdout == ""
    assert with_source.exit_code == 0
    assert json.loads(with_source.stdout.splitlines()[0])["source"] == "urn:parking:other-lot:gw-9"
    assert as_csv.exit_code == 0
    assert len(as_csv.stdout.splitlines()) == 6  # the header and five events


def test_journal_without_a_usable_config_is_invalid_input(tmp_path: Path) -> None:
    result = run("journal", "stats", "--config", tmp_path / "missing.toml")

    assert result.exit_code == 2
    assert "cannot read" in result.stderr


@pytest.mark.parametrize("command", [
    ("stats",), ("tail",), ("export", "--source", "urn:parking:lot:gw")])
def test_a_missing_journal_is_an_operational_failure(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    result = run("journal", *command, "--journal", tmp_path / "nope.db")

    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == f"Error: no journal at {tmp_path / 'nope.db'}"
    assert result.stdout == ""


def test_a_file_that_is_not_a_journal_is_an_operational_failure(tmp_path: Path) -> None:
    garbage = tmp_path / "journal.db"
    garbage.write_bytes(b"not a database, just bytes" * 100)

    # In a process of its own: a database connection left open on the way out keeps a
    # thread alive, and the command would never exit.
    done = subprocess.run(
        [sys.executable, "-c", "from gateway.cli import main; main()",
         "journal", "stats", "--journal", str(garbage)],
        capture_output=True, text=True, timeout=30, check=False,
    )

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"Error: cannot read the journal {garbage}: file is not a database\n"


def test_a_database_that_is_not_a_journal_is_an_operational_failure(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as db:
        db.execute("PRAGMA user_version = 1")  # looks migrated, but has none of our tables
        db.execute("CREATE TABLE notes (text TEXT)")
        db.commit()

    result = run("journal", "tail", "--journal", other)

    assert result.exit_code == 1
    assert result.stderr == f"Error: cannot read the journal {other}: no such table: outbox\n"


def test_counts_and_sequences_past_sqlite_integers_mean_all_or_none(config_file: Path) -> None:
    """Each raised OverflowError ("Python int too large to convert to SQLite INTEGER")."""
    tail = run("journal", "tail", "--config", config_file, "-n", "9" * 20, "--json")
    export = run("journal", "export", "--config", config_file, "--after", "9" * 20)

    assert tail.exit_code == 0, tail.stderr
    assert [event["seq"] for event in json.loads(tail.stdout)] == [1, 2, 3, 4, 5]
    assert (export.exit_code, export.stdout) == (0, "")
    assert export.stderr == "exported 0 events to stdout\n"


def test_reading_the_journal_leaves_no_file_behind(config_file: Path, journal_file: Path) -> None:
    """A read-only connection made the -wal and -shm files it found missing, and left them."""
    for command in (("journal", "stats"), ("journal", "tail"), ("journal", "export"),
                    ("report", "--day", "2026-03-02", "--no-png")):
        result = run(*command, "--config", config_file)
        assert result.exit_code == 0, (command, result.stderr)

    assert sorted(p.name for p in journal_file.parent.glob("journal.db*")) == sorted(
        p.name for p in [journal_file, *journal_file.parent.glob("journal.db.*")])
    assert not journal_file.with_name("journal.db-wal").exists()
    assert not journal_file.with_name("journal.db-shm").exists()


def test_a_reader_that_stops_reading_ends_the_export_quietly(tmp_path: Path) -> None:
    """`journal export | head` exited 1: exit 0 quietly, as Unix tools do."""
    path = tmp_path / "journal.db"
    asyncio.run(_fill(path, count=3000, acked=0))  # far more than a pipe's buffer holds
    export = subprocess.Popen(
        [sys.executable, "-c", "from gateway.cli import main; main()", "journal", "export",
         "--journal", str(path), "--source", "urn:parking:lot:gw"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert export.stdout is not None
    assert export.stderr is not None
    first = json.loads(export.stdout.readline())
    export.stdout.close()  # what `head -1` does

    assert export.wait(timeout=60) == 0
    assert export.stderr.read() == b""
    assert first["seq"] == 1


def test_export_to_an_unwritable_place_is_an_operational_failure(
    config_file: Path, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    target = tmp_path / "a-file" / "events.jsonl"  # a folder that cannot be made

    result = run("journal", "export", "--config", config_file, "--output", target)

    assert result.exit_code == 1
    assert f"cannot create the folder {target.parent}: File exists" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # A traceback each: OverflowError past the calendar, matplotlib's "Format 'txt' is not
        # supported".
        (("--day", "9999-12-31"), "--day 9999-12-31: give a day from 0001-01-02 to 9999-12-30"),
        (("--day", "0001-01-01"), "--day 0001-01-01: give a day from 0001-01-02 to 9999-12-30"),
        (("--day", "2026-03-02", "-o", "x.txt"),
         "--output x.txt: the chart is a PNG; name a file ending in .png"),
    ],
)
def test_report_refuses_what_it_cannot_do_in_one_line(config_file: Path, args: tuple[str, ...],
                                                      message: str) -> None:
    result = run("report", "--config", config_file, *args)

    assert result.exit_code == 2
    assert result.stderr == f"Error: {message}\n"


def test_report_on_the_calendars_last_day_it_can_show(config_file: Path) -> None:
    result = run("report", "--config", config_file, "--day", "9999-12-30", "--no-png", "--json")

    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["hours"]) == 24


# --- lpr ------------------------------------------------------------------------------------


def test_lpr_read_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    """/dev/zero was read until memory ran out, and a FIFO waited for a writer for ever."""
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)

    result = run("lpr", "read", "/dev/zero", fifo)

    assert result.exit_code == 2
    why = "not a regular file (a device, a FIFO or a socket)"
    assert result.stderr.splitlines() == [f"/dev/zero: {why}", f"{fifo}: {why}",
                                          "Error: 2 of 2 images could not be read"]
    assert result.stdout == ""  # issue 20: a table repeated each error, so it showed twice


# --- logs -----------------------------------------------------------------------------------


@pytest.mark.slow  # the daemon for a few seconds
def test_the_daemon_with_cameras_out_of_reach_logs_json_lines_only(tmp_path: Path) -> None:
    """OpenCV and FFmpeg wrote raw lines to stderr (360 in 30 minutes), which broke
    `journalctl -o cat | jq`."""
    config = tmp_path / "gateway.toml"
    config.write_text(MINIMAL.format(journal=tmp_path / "journal.db", secret=SECRET) + f"""
[control]
socket_path = "{tmp_path / 'control.sock'}"

[gpio]
pin_factory = "mock"

[lpr]
enabled = false

[[lanes]]
id = "in-1"
direction = "entry"
name = "Entry"
camera = {{ url = "rtsp://127.0.0.1:9/stream" }}
gpio = {{ arming_loop = 5, safety_loop = 6, open_relay = 17 }}

[[lanes]]
id = "in-2"
direction = "entry"
name = "Entry 2"
camera = {{ url = "/dev/video99" }}
gpio = {{ arming_loop = 12, safety_loop = 13, open_relay = 18 }}
""")
    env = {name: value for name, value in os.environ.items() if not name.startswith("OPENCV")}
    daemon = subprocess.Popen(
        [sys.executable, "-c", "from gateway.cli import main; main()", "run", "--config",
         str(config), "--no-sync"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # Up (its control socket is there; a slow or emulated machine takes longer than the 6 s
    # this used to allow in all), then long enough for both cameras to be tried and to fail.
    socket = tmp_path / "control.sock"
    deadline = time.monotonic() + 90
    while not socket.exists() and daemon.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3)
    daemon.terminate()
    out, err = daemon.communicate(timeout=60)

    assert err == ""
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert "gateway.stopped" in events


# --- bench ----------------------------------------------------------------------------------

FIGURES = {
    "events_per_s": 40_000, "ungrouped_events_per_s": 500, "raw_sqlite_rows_per_s": 80_000,
    "p50_commit_ms": 1.25, "p99_commit_ms": 4.5, "grouped_vs_ungrouped": 80.0,
    "grouped_vs_raw": 0.5,
}


@pytest.fixture
def bench_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replaces the (slow) journal benchmark; records each call and where it wrote."""
    calls: list[dict[str, Any]] = []

    async def journal_bench(directory: Path, *, producers: int, events: int) -> dict[str, Any]:
        await asyncio.to_thread((directory / "grouped.db").write_text, "")  # as the real one does
        calls.append({"directory": directory, "producers": producers, "events": events})
        structlog.get_logger("gateway.bench.journal").warning("bench.slow_disk", fsync_ms=12.5)
        return dict(FIGURES)

    monkeypatch.setattr(benchmarks, "journal_bench", journal_bench)
    return calls


def test_bench_journal_json_in_a_temporary_directory(bench_calls: list[dict[str, Any]]) -> None:
    result = run("bench", "journal", "--json", "--producers", "3", "--events", "100")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == FIGURES  # the log line went to stderr, not here
    assert "bench.slow_disk" in result.stderr
    (call,) = bench_calls
    assert (call["producers"], call["events"]) == (3, 100)
    assert not call["directory"].exists()  # removed afterwards


def test_bench_journal_human_output_and_kept_directory(
    bench_calls: list[dict[str, Any]], tmp_path: Path
) -> None:
    result = run("bench", "journal", "--dir", tmp_path)

    assert result.exit_code == 0
    assert bench_calls[0]["directory"] == tmp_path
    assert (bench_calls[0]["producers"], bench_calls[0]["events"]) == (64, 20_000)
    assert (tmp_path / "grouped.db").exists()
    lines = result.stdout.splitlines()
    assert "  events per s            40,000" in lines
    assert "  p99 commit ms             4.50" in lines
    assert any(line.split()[-1] == "80x" for line in lines if "one commit per event" in line)
    assert any(line.split()[-1] == "0.5x" for line in lines if "raw sqlite3" in line)


def test_bench_journal_refuses_fewer_events_than_producers() -> None:
    result = run("bench", "journal", "--producers", "8", "--events", "4")

    assert result.exit_code == 2
    assert "one event per producer" in result.stderr


def test_bench_failure_is_an_operational_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing(directory: Path, **_: int) -> dict[str, Any]:
        raise JournalError("the disk is full")

    monkeypatch.setattr(benchmarks, "journal_bench", failing)

    result = run("bench", "journal")

    assert result.exit_code == 1
    assert result.stderr == "Error: the disk is full\n"


def test_log_level_controls_what_reaches_stderr(bench_calls: list[dict[str, Any]]) -> None:
    quiet = run("--log-level", "error", "bench", "journal", "--json")

    assert quiet.exit_code == 0
    assert quiet.stderr == ""
    assert json.loads(quiet.stdout) == FIGURES



# --- a technician's day: what is wrong now, the journal live, the lot's time ----------------


def _mixed(path: Path) -> None:
    """Two bay readings around an alarm raised and cleared: events of three types."""

    async def fill() -> None:
        clock = FakeClock()
        journal = await Journal.open(JournalConfig(path=path), clock=clock)
        try:
            alarm = {"alarm_id": "bus.port:rs485", "code": "bus.port", "severity": "critical",
                     "message": "port gone", "component": "bus"}
            for event in (
                events.bay_changed(at=clock.now(), bay_id="A-01", floor="0", zone="A",
                                   bay_type="regular", state="occupied", previous_state="free",
                                   source="ultrasonic", sensor_healthy=True),
                events.alarm_raised(at=clock.now(), **alarm),
                events.alarm_cleared(at=clock.now(), **alarm),
                events.bay_changed(at=clock.now(), bay_id="A-01", floor="0", zone="A",
                                   bay_type="regular", state="free", previous_state="occupied",
                                   source="ultrasonic", sensor_healthy=True),
            ):
                await journal.append(event)
                clock.advance(60)
        finally:
            await journal.close()

    asyncio.run(fill())


def test_tail_in_utc_on_request_and_without_a_config(journal_file: Path, config_file: Path,
                                                     tmp_path: Path) -> None:
    asked = run("journal", "tail", "--config", config_file, "-n", "1", "--utc")
    no_config = run("journal", "tail", "--config", tmp_path / "none.toml", "--journal",
                    journal_file, "-n", "1")

    for result in (asked, no_config):
        assert result.exit_code == 0, result.stderr
        _, header, row = result.stdout.splitlines()
        assert "time (UTC)" in header
        assert row.split()[:3] == ["5", "2026-03-02", "08:04:00+00:00"]


def test_tail_and_export_take_types_and_families(tmp_path: Path) -> None:
    path = tmp_path / "mixed.db"
    _mixed(path)
    journal = ("--journal", path, "--config", tmp_path / "none.toml")

    family = run("journal", "tail", *journal, "--type", "alarm.", "--json")
    exact = run("journal", "tail", *journal, "--type", "bay.changed", "-n", "1", "--json")
    exported = run("journal", "export", *journal, "--format", "csv", "--type", "alarm.raised",
                   "--type", "bay.")

    assert [r["type"] for r in json.loads(family.stdout)] == ["alarm.raised", "alarm.cleared"]
    assert [r["seq"] for r in json.loads(exact.stdout)] == [4]  # the newest of that type
    assert [row["seq"] for row in csv.DictReader(exported.stdout.splitlines())] == ["1", "2", "4"]
    assert exported.stderr.endswith("exported 3 events (seq 1 to 4) to stdout\n")


@pytest.mark.parametrize("wrong", ["session", "alarm.raise", "nope."])
def test_a_type_that_matches_nothing_is_invalid_input(journal_file: Path, wrong: str) -> None:
    result = run("journal", "tail", "--journal", journal_file, "--type", wrong)

    assert result.exit_code == 2
    assert f"--type {wrong}: no such event type" in result.stderr
    assert "session.started" in result.stderr  # what there is


def test_export_of_one_event_says_event(config_file: Path) -> None:
    result = run("journal", "export", "--config", config_file, "--after", "4")

    assert result.exit_code == 0
    assert result.stderr == "exported 1 event (seq 5 to 5) to stdout\n"


def test_tail_on_an_80_column_terminal_is_one_line_per_event(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_cli, "terminal", lambda stream: True)
    runner = CliRunner(env={"COLUMNS": "80"})

    cut = runner.invoke(cli, ["journal", "tail", "--config", str(config_file)])
    wide = runner.invoke(cli, ["journal", "tail", "--config", str(config_file), "--wide"])

    assert cut.exit_code == wide.exit_code == 0
    cut_rows = cut.stdout.splitlines()[2:]
    assert len(cut_rows) == 5
    assert all(len(row) == 80 and row.endswith("…") for row in cut_rows)
    wide_rows = wide.stdout.splitlines()[2:]
    assert [row[:79] for row in wide_rows] == [row[:79] for row in cut_rows]
    data = json.loads(wide_rows[0][wide_rows[0].index("{"):])
    assert data["bayId"] == "A-00"


TAIL_F = "from gateway.cli.main import main; main()"


def _alarm(at: str, alarm_id: str) -> events.Event:
    return events.alarm_raised(at=datetime.fromisoformat(at), alarm_id=alarm_id, code="x",
                               severity="warning", message="m", component="c")


@pytest.mark.timeout(60)
async def test_tail_follows_new_events_until_ctrl_c(journal_file: Path, tmp_path: Path) -> None:
    """Beside a running daemon (its WAL), and then with none (the file alone)."""
    daemon = await Journal.open(JournalConfig(path=journal_file), clock=FakeClock())
    follower = await asyncio.create_subprocess_exec(
        sys.executable, "-c", TAIL_F, "journal", "tail", "-f", "--journal", str(journal_file),
        "--config", str(tmp_path / "none.toml"), "--type", "alarm.",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert follower.stdout is not None

    async def line() -> str:
        return (await asyncio.wait_for(follower.stdout.readline(), 20)).decode()

    try:
        assert (await line()).startswith("last 0 events of type alarm. in ")
        assert (await line()).split()[:2] == ["seq", "time"]
        await daemon.append(events.bay_changed(
            at=datetime.fromisoformat("2026-03-02T09:00:00Z"), bay_id="A-09", floor="0",
            zone="A", bay_type="regular", state="free", previous_state="occupied",
            source="ultrasonic", sensor_healthy=True))
        await daemon.append(_alarm("2026-03-02T09:00:01Z", "x:1"))
        assert (await line()).split()[:4] == [  # seq 6 is a bay reading
            "7", "2026-03-02", "09:00:01+00:00", "alarm.raised"]
        await daemon.close()
        daemon = await Journal.open(JournalConfig(path=journal_file), clock=FakeClock())
        await daemon.append(_alarm("2026-03-02T09:00:02Z", "x:2"))
        await daemon.close()  # the daemon gone: the journal's file alone holds the event
        assert (await line()).split()[:1] == ["8"]
        follower.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(follower.communicate(), 20)
    finally:
        await daemon.close()
        if follower.returncode is None:
            follower.kill()
            await follower.wait()
    assert follower.returncode == 0, err
    assert b"Traceback" not in err


STATUS = {
    "lotState": "open", "operatorState": "open", "openSessions": 1,
    "occupancy": {"total": {"free": 7, "occupied": 3, "unknown": 1, "outOfService": 0}},
    "lanes": [{"laneId": "entry-1", "direction": "entry", "mode": "auto", "state": "idle",
               "barrier": "down", "outOfOrder": False},
              {"laneId": "exit-1", "direction": "exit", "mode": "auto",
               "state": "out_of_order", "barrier": "unknown", "outOfOrder": True}],
    "sync": {"connected": True, "backlog": 0},
    "alarms": [{"alarmId": "gate.fault:exit-1", "severity": "critical",
                "message": "barrier did not reach its limit", "component": "lane",
                "raisedAt": "2026-03-02T08:00:00.000000Z"}],
}
LISTINGS = {
    "status": STATUS,
    "alarms.list": STATUS["alarms"],
    "sessions.open": [{"sessionId": "s-1", "plate": "AB123", "right": "visitor",
                       "reference": None, "entryLane": "entry-1",
                       "entryAt": "2026-07-01T10:30:00.000000Z"}],
    "plates.recent": [{"at": "2026-03-02T08:15:02.500000Z", "laneId": "entry-1",
                       "plate": "AB123", "confidence": 0.97, "decision": "open",
                       "allowed": True}],
}


@pytest.fixture
def daemon_answers(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The daemon's answers by method, instead of a control socket (tests/runtime has one)."""
    answers = dict(LISTINGS)
    monkeypatch.setattr(service_cli, "call_daemon",
                        lambda _socket, method, _params=None: answers[method])
    return answers


@pytest.mark.usefixtures("daemon_answers")
def test_status_leads_with_the_verdict_and_the_alarms() -> None:
    result = run("status")

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "FAILING: lane exit-1 out of order, 1 critical alarm"
    assert lines[1] == "1 active alarm"
    assert "gate.fault:exit-1" in lines[3]
    assert lines.index("lot") > 3  # the rest after what is wrong


def test_status_of_a_healthy_lot_says_ok(daemon_answers: dict[str, Any]) -> None:
    daemon_answers["status"] = {**STATUS, "lanes": STATUS["lanes"][:1], "alarms": [
        {"alarmId": "sync.slow", "severity": "info", "message": "slow"}]}

    result = run("status")
    machine = run("status", "--json")

    assert result.stdout.splitlines()[0] == "OK: lanes in order, no warning or critical alarm"
    assert json.loads(machine.stdout)["verdict"] == "ok"


@pytest.mark.usefixtures("daemon_answers")
def test_status_json_adds_the_verdict_to_the_daemons_answer() -> None:
    result = run("status", "--json")

    assert json.loads(result.stdout) == {**STATUS, "verdict": "failing"}


@pytest.mark.usefixtures("daemon_answers")
def test_status_on_a_terminal_leads_with_the_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_cli, "terminal", lambda stream: True)
    monkeypatch.setattr(common, "terminal", lambda stream: True)

    result = CliRunner(env={"COLUMNS": "80"}).invoke(cli, ["status"])

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "FAILING: lane exit-1 out of order, 1 critical alarm"
    assert all(len(line) <= 80 for line in lines)
    assert "─" in result.stdout  # rich's tables follow


@pytest.mark.usefixtures("daemon_answers")
@pytest.mark.parametrize(("command", "header", "berlin", "utc"), [
    (("alarms", "list"), "raised", "2026-03-02 09:00:00+01:00", "2026-03-02 08:00:00+00:00"),
    (("sessions", "open"), "entry", "2026-07-01 12:30:00+02:00", "2026-07-01 10:30:00+00:00"),
    (("plates", "recent"), "time", "2026-03-02 09:15:02+01:00", "2026-03-02 08:15:02+00:00"),
])
def test_listings_show_the_lots_time_with_its_offset(
    tmp_path: Path, command: tuple[str, ...], header: str, berlin: str, utc: str
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(MINIMAL.format(journal=tmp_path / "j.db", secret=SECRET))

    local = run(*command, "--config", config)
    asked_utc = run(*command, "--config", config, "--utc")
    machine = run(*command, "--config", config, "--json")

    assert local.exit_code == asked_utc.exit_code == machine.exit_code == 0, local.stderr
    assert f"{header} (Europe/Berlin)" in local.stdout
    assert berlin in local.stdout
    assert f"{header} (UTC)" in asked_utc.stdout
    assert utc in asked_utc.stdout
    assert json.loads(machine.stdout) == LISTINGS[".".join(command)]  # RFC 3339, UTC


@pytest.mark.usefixtures("daemon_answers")
def test_listings_without_a_config_are_in_utc(tmp_path: Path) -> None:
    if common.DEFAULT_CONFIG.exists():
        pytest.skip("this machine has a gateway config at the default path")

    result = run("alarms", "list")
    broken = run("alarms", "list", "--config", tmp_path / "none.toml")

    assert result.exit_code == 0
    assert "raised (UTC)" in result.stdout
    assert broken.exit_code == 2  # a config named must load


def test_root_version_option() -> None:
    result = CliRunner().invoke(cli, ["--version"], prog_name="parking-gateway")

    assert result.exit_code == 0
    assert result.stdout == f"parking-gateway {__version__}\n"


@pytest.mark.parametrize(("shell", "mark"), [
    ("bash", "complete -o nosort -F _parking_gateway_completion parking-gateway"),
    ("zsh", "#compdef parking-gateway"),
    ("fish", "complete --no-files --command parking-gateway"),
])
def test_completion_prints_the_shells_script(shell: str, mark: str) -> None:
    result = CliRunner().invoke(cli, ["completion", shell], prog_name="parking-gateway")

    assert result.exit_code == 0
    assert mark in result.stdout
    assert f"_PARKING_GATEWAY_COMPLETE={shell}_complete" in result.stdout


def test_the_completion_script_completes_commands() -> None:
    """What the script asks the CLI, as bash does: the commands that start with `jour`."""
    result = CliRunner(env={"_PARKING_GATEWAY_COMPLETE": "bash_complete",
                            "COMP_WORDS": "parking-gateway jour", "COMP_CWORD": "1"}).invoke(
        cli, [], prog_name="parking-gateway")

    assert result.stdout.splitlines() == ["plain,journal"]
