"""`parking-gateway journal ...`: read the offline journal (read-only: safe while the daemon runs).

`journal_option` and `journal_target` serve the other commands that read the journal
(`report`).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import shutil
import sqlite3
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import tzinfo
from functools import partial
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click
from click.core import ParameterSource
from pydantic import TypeAdapter

from gateway.cli.common import (
    EXIT_CODES,
    InvalidInput,
    OperationalError,
    Section,
    config_option,
    cut,
    folder_for,
    json_option,
    load_settings,
    number,
    plural,
    print_json,
    print_sections,
    run,
    shown_time,
    terminal,
    time_zone,
    utc_option,
)
from gateway.config import ConfigError, Settings, Slug
from gateway.config import load_settings as load_config
from gateway.core.events import EventType, source_uri
from gateway.journal import JournalError, JournalReader, OutboxRecord
from gateway.journal.reader import journal_files

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

PROGRESS_EVERY = 10_000  # rows between progress counts of a long export
FOLLOW_POLL_S = 0.5  # how soon `tail -f` shows a committed event; a read is cheap
FOLLOW_CHUNK = 500  # events read at a time while following
TYPE_WIDTH = max(len(t.value) for t in EventType)
SQLITE_MAX_INT = 2**63 - 1


def _at_most_sqlite_int(_ctx: click.Context, _param: click.Parameter, value: int) -> int:
    """SQLite's integers have 64 bits: a larger count or sequence means the same as the largest
    (every event; none after it), as `tail -n` takes a count past the file's end."""
    return min(value, SQLITE_MAX_INT)


@click.group()
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


def journal_target(config_path: Path, journal_path: Path | None) -> JournalTarget:
    """The journal to read: the config's, or --journal's (then a config is used if it loads)."""
    if journal_path is None:
        settings = load_settings(config_path)
        return JournalTarget(settings.journal.path, settings)
    chosen = click.get_current_context().get_parameter_source("config_path")
    if chosen is ParameterSource.DEFAULT and not config_path.exists():
        return JournalTarget(journal_path, None)  # the usual case away from a gateway
    try:
        return JournalTarget(journal_path, load_config(config_path))
    except ConfigError as e:
        more = f" (and {len(e.problems) - 1} more)" if len(e.problems) > 1 else ""
        click.echo(f"note: not using the config {config_path}: {e.problems[0]}{more}", err=True)
        return JournalTarget(journal_path, None)


async def with_reader(path: Path, use: Callable[[JournalReader], Awaitable[T]]) -> T:
    """`use` a read-only reader of the journal at `path`, closed afterwards."""
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
    target = journal_target(config_path, journal_path)
    stats = run(with_reader(target.path, lambda r: r.stats(target.max_size_mb)))
    if as_json:
        print_json(stats)
        return
    if stats["max_size_bytes"] is None:  # no config: the cap is not known here
        used = f"{_mib(stats['size_bytes'])} (cap unknown without a config)"
    else:
        share = stats["size_bytes"] / stats["max_size_bytes"] * 100
        used = f"{_mib(stats['size_bytes'])} of {_mib(stats['max_size_bytes'])}, {share:.1f}%"
    click.echo(f"journal {stats['path']} (schema {stats['schema_version']})")
    click.echo()
    print_sections([
        Section("events", [
            ("total", number(stats["events_total"])),
            ("unsynced", number(stats["events_unsynced"])),
            ("last seq", str(stats["last_seq"])),
            ("acked through", str(stats["acked_through"])),
            ("oldest unsynced", stats["oldest_unsynced_time"] or "-"),
        ]),
        Section("storage", [
            ("used", used),
            ("on disk", f"{_mib(stats['file_bytes'])} (database and WAL)"),
        ]),
        Section("sessions", [
            ("open", number(stats["sessions_open"])),
            ("closed", number(stats["sessions_closed"])),
        ]),
        Section("state", [
            ("bays", number(stats["bays"])),
            ("config versions", number(stats["config_versions"])),
            ("audit entries", number(stats["audit_entries"])),
        ]),
    ])


CSV_COLUMNS = ("seq", "id", "type", "time", "acked", "data")


def _record_row(record: OutboxRecord) -> tuple[str, ...]:
    """A stored event as the CSV columns: the data as JSON text, acked as true/false."""
    return (str(record.seq), record.id, record.type, record.time, str(record.acked).lower(),
            record.data_json)


def _event_types(_ctx: click.Context, _param: click.Parameter,
                 values: tuple[str, ...]) -> tuple[str, ...]:
    """--type values: an event type, or a prefix ending in a dot (`session.`) for a family.
    One that matches no type is a typo, said so now rather than found as an empty result."""
    known = [t.value for t in EventType]
    for value in values:
        if not any(_is_of(t, (value,)) for t in known):
            raise InvalidInput(f"--type {value}: no such event type (types: {', '.join(known)};"
                               " a prefix such as session. takes a family)")
    return values


def _is_of(event_type: str, types: tuple[str, ...]) -> bool:
    """Whether `event_type` is one of `types` (none: every type), prefixes ending in a dot."""
    return not types or any(event_type == t or (t.endswith(".") and event_type.startswith(t))
                            for t in types)


def type_option(f: F) -> F:
    return click.option(
        "--type", "types", multiple=True, metavar="TYPE", callback=_event_types,
        help="Only events of this type (bay.changed), or of a family by its prefix (session.);"
             " repeat for more.",
    )(f)


@journal.command("tail", epilog=EXIT_CODES)
@config_option
@journal_option
@click.option("-n", "--lines", "count", type=click.IntRange(min=1), default=20,
              callback=_at_most_sqlite_int, show_default=True,
              help="How many of the newest events.")
@click.option("-f", "--follow", is_flag=True,
              help="Then print new events as they are committed, until Ctrl-C.")
@type_option
@click.option("--wide", is_flag=True,
              help="Show the data in full; on a terminal it is cut to one line per event.")
@utc_option
@json_option
def journal_tail(config_path: Path, journal_path: Path | None, count: int, follow: bool,
                 types: tuple[str, ...], wide: bool, utc: bool, as_json: bool) -> None:
    """The newest events, oldest first, times in the lot's time (the config's zone).

    --json prints a list of the stored records (times in UTC); with --follow, one JSON object
    per line.
    """
    target = journal_target(config_path, journal_path)
    show = _TailPrinter(time_zone(target.settings, utc), as_json=as_json,
                        width=None if wide or not terminal(sys.stdout) else
                        shutil.get_terminal_size().columns)

    async def tail() -> None:
        records, last = await with_reader(target.path, lambda r: _newest(r, count, types))
        if as_json and not follow:
            print_json([_record_json(r) for r in records])
            return
        of_types = f" of type {', '.join(types)}" if types else ""
        show.start(f"last {plural(len(records), 'event')}{of_types} in {target.path}", records,
                   last)
        if follow:
            await _follow(target.path, last, types, show.record)

    try:
        run(tail())
    except KeyboardInterrupt:
        return  # Ctrl-C is how a follow ends


def _record_json(record: OutboxRecord) -> dict[str, Any]:
    return {"seq": record.seq, "id": record.id, "type": record.type, "time": record.time,
            "acked": record.acked, "data": json.loads(record.data_json)}


async def _newest(reader: JournalReader, count: int,
                  types: tuple[str, ...]) -> tuple[list[OutboxRecord], int]:
    """The newest `count` events of `types`, oldest first, and the last sequence read (where a
    follow goes on). Of some types only: every event is read, keeping the newest (memory flat)."""
    if not types:
        records = await reader.tail(count)
        return records, records[-1].seq if records else 0
    kept: deque[OutboxRecord] = deque(maxlen=count)
    last = 0
    async for record in reader.iter_events():
        last = record.seq
        if _is_of(record.type, types):
            kept.append(record)
    return list(kept), last


async def _follow(path: Path, after: int, types: tuple[str, ...],
                  show: Callable[[OutboxRecord], None]) -> None:
    """Events of `types` committed after `after`, as they come, until cancelled. It polls a
    read-only connection: the daemon's writes are never waited on or locked.

    A reader opened beside the daemon reads its WAL and is kept while the daemon runs (its WAL
    file is there). One opened with no daemon reads the file as immutable and would never see
    a later commit, so it is opened anew for each look.
    """
    wal = journal_files(path)[1]
    while True:
        # Looked at before opening: a daemon that starts in between is found at the next look.
        live = await asyncio.to_thread(wal.exists)
        after = await with_reader(path, partial(_read_new, wal=wal if live else None,
                                                after=after, types=types, show=show))
        await asyncio.sleep(FOLLOW_POLL_S)


async def _read_new(reader: JournalReader, *, wal: Path | None, after: int,
                    types: tuple[str, ...], show: Callable[[OutboxRecord], None]) -> int:
    """Show the events after `after`; then, given the daemon's `wal`, go on while it is there.
    The last sequence read."""
    while True:
        records = await reader.read_events(after, FOLLOW_CHUNK)
        for record in records:
            if _is_of(record.type, types):
                show(record)
        if records:
            after = records[-1].seq
        elif wal is None or not await asyncio.to_thread(wal.exists):
            return after
        else:
            await asyncio.sleep(FOLLOW_POLL_S)


class _TailPrinter:
    """`journal tail`'s lines for a person: seq, time with its offset, type, acked, data; cut to
    `width` on a terminal, so a row stays one line. No id: it is in --json and export."""

    def __init__(self, zone: tzinfo, *, as_json: bool, width: int | None) -> None:
        self.zone = zone
        self.as_json = as_json
        self.width = width
        self.seq_width = 3

    def start(self, title: str, records: list[OutboxRecord], last: int) -> None:
        if not self.as_json:
            self.seq_width = max(3, len(str(last)))
            click.echo(title)
            self._echo(self._line("seq", f"time ({self.zone})", "type", "acked", "data"))
        for record in records:
            self.record(record)

    def record(self, record: OutboxRecord) -> None:
        if self.as_json:
            click.echo(json.dumps(_record_json(record), ensure_ascii=False,
                                  separators=(",", ":")))
            return
        self._echo(self._line(str(record.seq), shown_time(record.time, self.zone), record.type,
                              str(record.acked).lower(), record.data_json))

    def _line(self, seq: str, time: str, type_: str, acked: str, data: str) -> str:
        return f"{seq:>{self.seq_width}}  {time:<25}  {type_:<{TYPE_WIDTH}}  {acked:<5}  {data}"

    def _echo(self, line: str) -> None:
        click.echo(line if self.width is None else cut(line, self.width))


SOURCE_PREFIX = "urn:parking:"
_SLUG = TypeAdapter(Slug)


def _source(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """--source as the gateway writes it, `urn:parking:<lot_id>:<gateway_id>` with both ids
    as the config takes them: the backend files events by their source, so a typo would
    file them under a gateway that does not exist."""
    if value is None:
        return None
    lot_id, colon, gateway_id = value.removeprefix(SOURCE_PREFIX).partition(":")
    try:
        if not value.startswith(SOURCE_PREFIX) or not colon:
            raise ValueError(value)
        return source_uri(_SLUG.validate_python(lot_id), _SLUG.validate_python(gateway_id))
    except ValueError:  # pydantic's ValidationError too
        raise InvalidInput(f"--source {value}: give urn:parking:<lot_id>:<gateway_id>, each id"
                           " 1 to 63 lowercase letters, digits or '-'") from None


@journal.command("export", epilog=EXIT_CODES)
@config_option
@journal_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True,
              help="jsonl: one CloudEvents JSON object per line; csv: " + ",".join(CSV_COLUMNS))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
              default="-", show_default=True, help="The file to write; - is stdout.")
@click.option("--after", type=click.IntRange(min=0), default=0, metavar="SEQ",
              callback=_at_most_sqlite_int, help="Only events with a sequence above SEQ.")
@click.option("--source", metavar="URN", callback=_source,
              help="CloudEvents source for jsonl; default: urn:parking:<lot_id>:<gateway_id>"
                   " from the config.")
@type_option
def journal_export(config_path: Path, journal_path: Path | None, fmt: str, output: Path,
                   after: int, source: str | None, types: tuple[str, ...]) -> None:
    """Every stored event in sequence order, streamed (memory stays flat).

    A summary line goes to stderr, with a running count on a terminal.
    """
    target = journal_target(config_path, journal_path)
    if fmt == "jsonl" and source is None:
        if target.settings is None:
            raise InvalidInput("jsonl needs the CloudEvents source: give --source"
                               " urn:parking:<lot_id>:<gateway_id>, or a config that loads")
        source = source_uri(target.settings.gateway.lot_id, target.settings.gateway.gateway_id)
    to_stdout = str(output) == "-"
    name = "stdout" if to_stdout else str(output)
    if not to_stdout:
        folder_for(output)

    # A running count only where a person watches, and not across events on the same screen.
    progress = terminal(sys.stderr) and not (to_stdout and terminal(sys.stdout))

    async def export(reader: JournalReader) -> Export:
        with _output(output, to_stdout) as out:
            return await _write_events(reader, out, fmt, source or "", after, types,
                                       progress=progress)

    try:
        done = run(with_reader(target.path, export))
    except BrokenPipeError:
        raise  # `| head`: the root command ends quietly
    except OSError as e:
        raise OperationalError(f"cannot write {name}: {e.strerror or e}") from None
    seqs = f" (seq {done.first} to {done.last})" if done.count else ""
    click.echo(f"exported {plural(done.count, 'event')}{seqs} to {name}", err=True)


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
                        types: tuple[str, ...], *, progress: bool) -> Export:
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    count, first, last = 0, None, None
    async for record in reader.iter_events(after):
        if not _is_of(record.type, types):
            continue
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




def _mib(size_bytes: int) -> str:
    return f"{size_bytes / 2**20:,.1f} MiB"
