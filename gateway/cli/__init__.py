"""The technician's command line, `parking-gateway`: check a config, price a stay, read the journal.

Handlers stay thin: parse, call the library, print. Output is a rich table on a terminal,
plain aligned text otherwise, and JSON with `--json` (then nothing else goes to stdout).
Errors go to stderr, one line each; exit codes are in `EXIT_CODES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import platform
import sqlite3
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, TypeVar
from zoneinfo import ZoneInfo

import click
from click.core import ParameterSource
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gateway import __version__
from gateway.bench import journal as benchmarks
from gateway.config import ConfigError, Settings, describe, load_settings
from gateway.core.events import source_uri
from gateway.core.tariff import (
    Quote,
    UnknownValidationError,
    local_to_utc,
    lost_ticket_quote,
    money,
    quote,
)
from gateway.journal import JournalError, JournalReader, OutboxRecord
from gateway.runtime.log import LEVELS, configure_logging

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_CONFIG = Path("/etc/parking-gateway/gateway.toml")
CONFIG_ENV = "PARKING_GATEWAY_CONFIG"
PROGRESS_EVERY = 10_000  # rows between progress counts of a long export
# The two figures `bench journal` is for: group commit's rate over the alternatives'.
BENCH_RATIOS = {
    "grouped_vs_ungrouped": "vs one commit per event",
    "grouped_vs_raw": "vs raw sqlite3, same batches",
}

EXIT_CODES = """\b
Exit codes:
  0  success
  1  operational failure: the journal or a file cannot be read or written
  2  invalid input: bad usage, a config that is missing or invalid, a bad date,
     an unknown tariff or validation
"""


class OperationalError(click.ClickException):
    """The input was fine but the work could not be done (an unreadable journal, a full disk)."""

    exit_code = 1


class InvalidInput(click.ClickException):
    """What the technician gave cannot be used (a bad config, an unknown tariff)."""

    exit_code = 2


# --- output ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    """One block of human output: a title, optional column names, rows of text."""

    title: str
    rows: Sequence[Sequence[str]]
    header: Sequence[str] = ()
    right_last: bool = False  # right-align the last column (amounts)
    wrap: int = -1  # on a narrow terminal only this column wraps; ids and times stay whole


def _terminal(stream: TextIO) -> bool:
    return stream.isatty()  # one place for tests to stand in a terminal


def _print_sections(sections: Sequence[Section]) -> None:
    if _terminal(sys.stdout):
        console = Console(highlight=False)
        for section in sections:
            console.print(_rich_table(section))
        return
    for i, section in enumerate(sections):
        if i:
            click.echo()
        click.echo(section.title)
        for line in _plain_lines(section):
            click.echo(line)


def _rich_table(section: Section) -> Table:
    columns = len(section.header or section.rows[0]) if section.header or section.rows else 1
    table = Table(title=Text(section.title, style="bold"), title_justify="left",
                  show_header=bool(section.header), box=box.SIMPLE_HEAD)
    wrap = section.wrap % columns
    for i in range(columns):
        right = section.right_last and i == columns - 1
        table.add_column(section.header[i] if section.header else "",
                         justify="right" if right else "left", no_wrap=i != wrap,
                         overflow="fold" if i == wrap else "ellipsis")
    for row in section.rows:
        table.add_row(*(Text(cell) for cell in row))  # Text: a "[" in data is not markup
    return table


def _plain_lines(section: Section) -> Iterator[str]:
    rows = [section.header, *section.rows] if section.header else list(section.rows)
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    last = len(widths) - 1
    for row in rows:
        cells = (cell.rjust(w) if section.right_last and i == last else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
        yield ("  " + "  ".join(cells)).rstrip()


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name}: {n}" for name, n in counts.items()) or "none"


def _mib(size_bytes: int) -> str:
    return f"{size_bytes / 2**20:,.1f} MiB"


def _set(flag: bool) -> str:
    return "set" if flag else "unset"


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


# --- shared options and loading ----------------------------------------------------------

# Functions rather than click.option(...) values: their types stay visible to mypy in the
# modules that import them back (the subsystems' command modules, registered at the end).


def json_option(f: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON on stdout, and nothing else there."
    )(f)


def config_option(f: F) -> F:
    return click.option(
        "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
        default=DEFAULT_CONFIG, envvar=CONFIG_ENV, show_default=True, show_envvar=True,
        help="The gateway's config file.",
    )(f)


def _fail_config(path: Path, error: ConfigError) -> InvalidInput:
    """Print every problem of a config on stderr; the caller raises what this returns."""
    for problem in error.problems:
        click.echo(str(problem), err=True)
    count = len(error.problems)
    return InvalidInput(f"{path}: {count} problem{'s' if count != 1 else ''}")


def _load_settings(path: Path) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as e:
        raise _fail_config(path, e) from None


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run async library code; a journal that cannot be read is an operational failure."""
    try:
        return asyncio.run(work)
    except JournalError as e:
        raise OperationalError(str(e)) from None


# --- the command tree --------------------------------------------------------------------


@click.group(epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level", type=click.Choice(LEVELS, case_sensitive=False), default="warning",
    show_default=True, help="Log lines at this level and above go to stderr.",
)
def cli(log_level: str) -> None:
    """Technician's tool for a parking-lot edge gateway."""
    # Logs go to stderr, so that stdout holds only the command's output (or its JSON).
    configure_logging(log_level, "auto", sys.stderr)


def main() -> None:
    """The console script `parking-gateway`."""
    cli(prog_name="parking-gateway")


# --- version -----------------------------------------------------------------------------


@cli.command(epilog=EXIT_CODES)
@json_option
def version(as_json: bool) -> None:
    """Versions of the gateway, Python and SQLite, and the platform."""
    info = {
        "version": __version__,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
    }
    if as_json:
        _print_json(info)
        return
    rows = [(name, value) for name, value in info.items() if name != "version"]
    _print_sections([Section(f"parking-gateway {__version__}", rows)])


# --- config ------------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Check a configuration file."""


@config.command("check", epilog=EXIT_CODES)
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@json_option
def config_check(path: Path, as_json: bool) -> None:
    """Load PATH as the daemon would (with PARKING_GATEWAY__ variables) and summarise it.

    Every problem is printed on stderr as `dotted.path: message`. Secrets are shown only
    as set or unset.
    """
    try:
        settings = load_settings(path)
    except ConfigError as e:
        if as_json:
            problems = [{"path": p.path, "message": p.message} for p in e.problems]
            _print_json({"valid": False, "config": str(path), "problems": problems})
        raise _fail_config(path, e) from None
    summary = describe(settings)
    if as_json:
        _print_json({"valid": True, "config": str(path), "summary": summary})
        return
    click.echo(f"{path}: valid")
    click.echo()
    _print_sections(_summary_sections(summary))


def _summary_sections(summary: Mapping[str, Any]) -> list[Section]:
    lanes, bays, tariffs = summary["lanes"], summary["bays"], summary["tariffs"]
    journal, sync, logging = summary["journal"], summary["sync"], summary["logging"]
    mqtt, http = sync["mqtt"], sync["http"]
    return [
        Section("identity", [
            ("lot", summary["lot_id"]),
            ("gateway", summary["gateway_id"]),
            ("time zone", summary["timezone"]),
            ("event source", source_uri(summary["lot_id"], summary["gateway_id"])),
        ]),
        Section("lanes", [
            ("total", str(lanes["total"])),
            ("by direction", _counts(lanes["by_direction"])),
            ("cameras", _counts(lanes["cameras"])),
        ]),
        Section("bays", [
            ("total", str(bays["total"])),
            ("by floor", _counts(bays["by_floor"])),
            ("by zone", _counts(bays["by_zone"])),
            ("by type", _counts(bays["by_type"])),
            ("by sensor", _counts(bays["by_sensor"])),
        ]),
        Section("tariffs", [
            ("default", tariffs["default"]),
            ("defined", ", ".join(tariffs["names"])),
        ]),
        Section("journal", [
            ("path", journal["path"]),
            ("size cap", f"{journal['max_size_mb']} MiB"),
            ("retention", f"{journal['retention_days']} days"),
            ("startup check", journal["startup_check"]),
        ]),
        Section("sync", [
            ("mqtt broker", mqtt["broker"]),
            ("mqtt tls", "yes" if mqtt["tls"] else "no"),
            ("mqtt username", mqtt["username"] or "(none)"),
            ("mqtt password", _set(mqtt["password_set"])),
            ("http base url", http["base_url"] or "(none)"),
            ("http token", _set(http["token_set"])),
            ("command hmac key", _set(sync["command_hmac_key_set"])),
        ]),
        Section("logging", [("level", logging["level"]), ("format", logging["format"])]),
    ]


# --- tariff ------------------------------------------------------------------------------


def _parse_time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """An ISO 8601 date and time, naive (lot-local: resolved once the config is loaded) or not."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date and time, e.g."
                                 " 2026-03-02T08:30 (lot-local) or 2026-03-02T07:30Z") from None


def _instant(value: datetime, tz: ZoneInfo) -> datetime:
    """A naive time is lot-local wall time, read as the tariff reads band edges (DST)."""
    return local_to_utc(value, tz) if value.tzinfo is None else value.astimezone(UTC)


@cli.group()
def tariff() -> None:
    """Price stays with the configured tariffs."""


@tariff.command("quote", epilog=EXIT_CODES)
@config_option
@click.option("--entry", metavar="ISO8601", callback=_parse_time, help="When the stay began.")
@click.option("--exit", "exit_", metavar="ISO8601", callback=_parse_time, help="When it ended.")
@click.option("--tariff", "tariff_name", metavar="NAME",
              help="A table under [tariffs]; default: gateway.default_tariff.")
@click.option("--validation", "validations", metavar="NAME", multiple=True,
              help="A validation of the tariff, applied in the order given; repeatable.")
@click.option("--lost-ticket", is_flag=True,
              help="Price a stay with no entry record (the tariff's lost_ticket_minor).")
@json_option
def tariff_quote(
    config_path: Path,
    entry: datetime | None,
    exit_: datetime | None,
    tariff_name: str | None,
    validations: tuple[str, ...],
    lost_ticket: bool,
    as_json: bool,
) -> None:
    """The fee for a stay, line by line.

    Times without an offset are lot-local (gateway.timezone); times with one, or a Z, are
    taken as given. --json prints {"amount_minor", "currency", "lines"}.
    """
    if lost_ticket and (entry is not None or exit_ is not None or validations):
        raise click.UsageError("--lost-ticket prices a stay with no entry record: leave out"
                               " --entry, --exit and --validation")
    if not lost_ticket and (entry is None or exit_ is None):
        raise click.UsageError("give --entry and --exit (or --lost-ticket)")
    settings = _load_settings(config_path)
    name = tariff_name or settings.gateway.default_tariff
    table = settings.tariffs.get(name)
    if table is None:
        defined = ", ".join(sorted(settings.tariffs))
        raise InvalidInput(f"unknown tariff {name!r} (defined: {defined})")
    tz = settings.gateway.tzinfo
    stay = [("tariff", f"{name} ({table.currency})")]
    try:
        if entry is None or exit_ is None:  # --lost-ticket
            result = lost_ticket_quote(table)
            stay.append(("stay", "lost ticket: no entry record"))
        else:
            start, end = _instant(entry, tz), _instant(exit_, tz)
            if end < start:
                raise InvalidInput(
                    f"--exit {_local(end, tz)} is before --entry {_local(start, tz)}")
            result = quote(table, start, end, tz=tz, validations=validations)
            stay += [("entry", _local(start, tz)), ("exit", _local(end, tz)),
                     ("duration", _duration(end - start))]
    except (ValueError, UnknownValidationError) as e:
        raise InvalidInput(str(e)) from None
    if as_json:
        _print_json(result.to_json())
        return
    _print_sections([Section("stay", stay), _fee_section(result, tz)])


def _fee_section(result: Quote, tz: ZoneInfo) -> Section:
    total = ("total", money(result.amount_minor, result.currency))
    if not any(line.start for line in result.lines):  # a lost ticket: no stretch of time
        rows = [(line.description, money(line.amount_minor, result.currency))
                for line in result.lines]
        return Section("fee", [*rows, total], header=("line", "amount"), right_last=True,
                       wrap=0)
    timed = [
        (_local(line.start, tz) if line.start else "", _local(line.end, tz) if line.end else "",
         line.description, money(line.amount_minor, result.currency))
        for line in result.lines
    ]
    return Section("fee", [*timed, ("", "", *total)], header=("from", "to", "line", "amount"),
                   right_last=True, wrap=2)


def _local(at: datetime, tz: ZoneInfo) -> str:
    return at.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def _duration(span: timedelta) -> str:
    minutes, seconds = divmod(int(span.total_seconds()), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min"),
                                             (seconds, "s")) if n]
    return " ".join(parts) or "0 s"


# --- journal -----------------------------------------------------------------------------


@cli.group()
def journal() -> None:
    """Read the offline journal (read-only: safe while the daemon runs)."""


def journal_option(f: F) -> F:
    return click.option(
        "--journal", "journal_path", type=click.Path(path_type=Path, dir_okay=False),
        help="The journal file, instead of the config's journal.path; the config is then "
             "optional.",
    )(f)


@dataclass(frozen=True, slots=True)
class JournalTarget:
    path: Path
    settings: Settings | None  # None: no usable config (only with --journal)

    @property
    def max_size_mb(self) -> int | None:
        return None if self.settings is None else self.settings.journal.max_size_mb


def _journal_target(config_path: Path, journal_path: Path | None) -> JournalTarget:
    if journal_path is None:
        settings = _load_settings(config_path)
        return JournalTarget(settings.journal.path, settings)
    chosen = click.get_current_context().get_parameter_source("config_path")
    if chosen is ParameterSource.DEFAULT and not config_path.exists():
        return JournalTarget(journal_path, None)  # the usual case away from a gateway
    try:
        return JournalTarget(journal_path, load_settings(config_path))
    except ConfigError as e:
        more = f" (and {len(e.problems) - 1} more)" if len(e.problems) > 1 else ""
        click.echo(f"note: not using the config {config_path}: {e.problems[0]}{more}", err=True)
        return JournalTarget(journal_path, None)


async def _with_reader(path: Path, use: Callable[[JournalReader], Awaitable[T]]) -> T:
    reader = await JournalReader.open(path)
    try:
        return await use(reader)
    except sqlite3.Error as e:  # a file with a schema version but not our tables
        raise JournalError(f"cannot read the journal {path}: {e}") from e
    finally:
        await reader.close()


@journal.command("stats", epilog=EXIT_CODES)
@config_option
@journal_option
@json_option
def journal_stats(config_path: Path, journal_path: Path | None, as_json: bool) -> None:
    """Counts, sync progress and size of the journal."""
    target = _journal_target(config_path, journal_path)
    stats = _run(_with_reader(target.path, lambda r: r.stats(target.max_size_mb)))
    if as_json:
        _print_json(stats)
        return
    if stats["max_size_bytes"] is None:  # no config: the cap is not known here
        used = f"{_mib(stats['size_bytes'])} (cap unknown without a config)"
    else:
        share = stats["size_bytes"] / stats["max_size_bytes"] * 100
        used = f"{_mib(stats['size_bytes'])} of {_mib(stats['max_size_bytes'])}, {share:.1f}%"
    click.echo(f"journal {stats['path']} (schema {stats['schema_version']})")
    click.echo()
    _print_sections([
        Section("events", [
            ("total", _number(stats["events_total"])),
            ("unsynced", _number(stats["events_unsynced"])),
            ("last seq", str(stats["last_seq"])),
            ("acked through", str(stats["acked_through"])),
            ("oldest unsynced", stats["oldest_unsynced_time"] or "-"),
        ]),
        Section("storage", [
            ("used", used),
            ("on disk", f"{_mib(stats['file_bytes'])} (database and WAL)"),
        ]),
        Section("sessions", [
            ("open", _number(stats["sessions_open"])),
            ("closed", _number(stats["sessions_closed"])),
        ]),
        Section("state", [
            ("bays", _number(stats["bays"])),
            ("config versions", _number(stats["config_versions"])),
            ("audit entries", _number(stats["audit_entries"])),
        ]),
    ])


CSV_COLUMNS = ("seq", "id", "type", "time", "acked", "data")


def _record_row(record: OutboxRecord) -> tuple[str, ...]:
    """A stored event as the CSV columns: the data as JSON text, acked as true/false."""
    return (str(record.seq), record.id, record.type, record.time, str(record.acked).lower(),
            record.data_json)


@journal.command("tail", epilog=EXIT_CODES)
@config_option
@journal_option
@click.option("-n", "--lines", "count", type=click.IntRange(min=1), default=20,
              show_default=True, help="How many of the newest events.")
@json_option
def journal_tail(config_path: Path, journal_path: Path | None, count: int,
                 as_json: bool) -> None:
    """The newest events, oldest first. --json prints a list of the stored records."""
    target = _journal_target(config_path, journal_path)
    records = _run(_with_reader(target.path, lambda r: r.tail(count)))
    if as_json:
        _print_json([
            {"seq": r.seq, "id": r.id, "type": r.type, "time": r.time, "acked": r.acked,
             "data": json.loads(r.data_json)}
            for r in records
        ])
        return
    # For a person: no id (it is in --json and export), time to the second.
    rows = [(str(r.seq), r.time[:19] + "Z", r.type, str(r.acked).lower(), r.data_json)
            for r in records]
    title = f"last {len(records)} events of {target.path}"
    _print_sections([Section(title, rows, header=("seq", "time (UTC)", "type", "acked", "data"))])


@journal.command("export", epilog=EXIT_CODES)
@config_option
@journal_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True,
              help="jsonl: one CloudEvents JSON object per line; csv: " + ",".join(CSV_COLUMNS))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
              default="-", show_default=True, help="The file to write; - is stdout.")
@click.option("--after", type=click.IntRange(min=0), default=0, metavar="SEQ",
              help="Only events with a sequence above SEQ.")
@click.option("--source", metavar="URN",
              help="CloudEvents source for jsonl; default: urn:parking:<lot_id>:<gateway_id>"
                   " from the config.")
def journal_export(config_path: Path, journal_path: Path | None, fmt: str, output: Path,
                   after: int, source: str | None) -> None:
    """Every stored event in sequence order, streamed (memory stays flat).

    A summary line goes to stderr, with a running count on a terminal.
    """
    target = _journal_target(config_path, journal_path)
    if fmt == "jsonl" and source is None:
        if target.settings is None:
            raise InvalidInput("jsonl needs the CloudEvents source: give --source"
                               " urn:parking:<lot_id>:<gateway_id>, or a config that loads")
        source = source_uri(target.settings.gateway.lot_id, target.settings.gateway.gateway_id)
    to_stdout = str(output) == "-"
    name = "stdout" if to_stdout else str(output)

    # A running count only where a person watches, and not across events on the same screen.
    progress = _terminal(sys.stderr) and not (to_stdout and _terminal(sys.stdout))

    async def export(reader: JournalReader) -> Export:
        with _output(output, to_stdout) as out:
            return await _write_events(reader, out, fmt, source or "", after, progress=progress)

    try:
        done = _run(_with_reader(target.path, export))
    except BrokenPipeError:
        raise  # `| head`: click ends quietly
    except OSError as e:
        raise OperationalError(f"cannot write {name}: {e.strerror or e}") from None
    seqs = f" (seq {done.first} to {done.last})" if done.count else ""
    click.echo(f"exported {done.count:,} events{seqs} to {name}", err=True)


@dataclass(frozen=True, slots=True)
class Export:
    count: int
    first: int | None
    last: int | None


@contextlib.contextmanager
def _output(path: Path, to_stdout: bool) -> Iterator[TextIO]:
    if to_stdout:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8", newline="") as out:
        yield out


async def _write_events(reader: JournalReader, out: TextIO, fmt: str, source: str, after: int,
                        *, progress: bool) -> Export:
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    count, first, last = 0, None, None
    async for record in reader.iter_events(after):
        if writer is not None:
            writer.writerow(_record_row(record))
        else:
            out.write(record.to_json(source) + "\n")
        count += 1
        first = record.seq if first is None else first
        last = record.seq
        if progress and count % PROGRESS_EVERY == 0:
            click.echo(f"\r{count:,} events", err=True, nl=False)
    if progress and count >= PROGRESS_EVERY:
        click.echo(err=True)  # end the running count's line
    return Export(count, first, last)


# --- bench -------------------------------------------------------------------------------


@cli.group()
def bench() -> None:
    """Benchmarks: figures for this machine, not pass/fail tests."""


@bench.command("journal", epilog=EXIT_CODES)
@click.option("--producers", type=click.IntRange(min=1), default=64, show_default=True,
              help="Concurrent writers, as lanes and sensors are.")
@click.option("--events", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="Events written in all.")
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False),
              help="Where to write (kept afterwards); default: a temporary directory, removed"
                   " afterwards. /tmp may be in RAM: on a gateway, give a directory on the"
                   " journal's disk to measure its fsync.")
@json_option
def bench_journal(producers: int, events: int, directory: Path | None, as_json: bool) -> None:
    """Journal throughput with group commit, against ungrouped commits and raw sqlite3."""
    where = (contextlib.nullcontext(str(directory)) if directory is not None
             else tempfile.TemporaryDirectory(prefix="parking-gateway-bench-"))
    try:
        with where as path:
            result = _run(benchmarks.journal_bench(Path(path), producers=producers, events=events))
    except ValueError as e:  # e.g. fewer events than producers
        raise InvalidInput(str(e)) from None
    except OSError as e:
        raise OperationalError(f"benchmark failed: {e}") from None
    if as_json:
        _print_json(result)
        return
    figures = [(key.replace("_", " "), _number(value)) for key, value in result.items()
               if key not in BENCH_RATIOS]
    ratios = [(label, f"{result[key]:.3g}x") for key, label in BENCH_RATIOS.items()]
    _print_sections([
        Section("journal bench", figures, right_last=True),
        Section("group commit throughput", ratios, right_last=True),
    ])


# --- commands defined beside their subsystems ----------------------------------------------


def _register_subsystem_commands() -> None:
    """Each subsystem keeps its commands in its own module; they join the CLI here.

    Those modules import this one for its helpers, so they are imported once it is complete.
    """
    from parking_sim.cli import sim  # click only; the simulator loads on use
    from parking_sim.demo import demo

    from gateway.cli.bus import bus
    from gateway.cli.daemon import bench_lane, run
    from gateway.cli.lpr import lpr
    from gateway.cli.service import register_service_commands
    from gateway.cli.sync import bench_sync

    for command in (run, lpr, sim, demo):
        cli.add_command(command)
    for command in (bench_lane, bus, bench_sync):
        bench.add_command(command)
    register_service_commands(cli)  # status, gate, lane, lot, bay, sensors, sessions, ...


_register_subsystem_commands()
