"""What every `parking-gateway` command shares: exit codes, output, common options, loading.

Output is a rich table on a terminal, plain aligned text otherwise, and JSON with `--json`
(then nothing else goes to stdout). Errors go to stderr, one line each; exit codes are in
`EXIT_CODES`. Command modules, the simulator's plugins included, import this module and never
the root command (gateway.cli.main), so the CLI has no import cycle.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click
from click.core import ParameterSource

from gateway.config import ConfigError, Settings
from gateway.config import load_settings as load_config
from gateway.journal import JournalError

if TYPE_CHECKING:
    from rich.table import Table

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_CONFIG = Path("/etc/parking-gateway/gateway.toml")
CONFIG_ENV = "PARKING_GATEWAY_CONFIG"

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


def terminal(stream: TextIO) -> bool:
    """Whether a person watches `stream`; one place for tests to stand in a terminal."""
    return stream.isatty()


def print_sections(sections: Sequence[Section]) -> None:
    if terminal(sys.stdout):
        # rich only here, for a person: `parking-gateway run` (the daemon) never loads it.
        from rich.console import Console

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
    from rich import box
    from rich.table import Table
    from rich.text import Text

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


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def plural(count: int, noun: str) -> str:
    """`1 event`, `2 events`, `1,234 events`."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def cut(line: str, width: int) -> str:
    """`line` within `width` columns, an ellipsis where it was cut: one line per row."""
    return line if len(line) <= width else line[:max(width - 1, 0)] + "…"


def shown_time(rfc3339: str, zone: tzinfo) -> str:
    """`2026-03-02 09:03:00+01:00`: a stored UTC time as a person compares it with a clock,
    to the second and with its offset, so that it cannot be read in the wrong zone."""
    return datetime.fromisoformat(rfc3339).astimezone(zone).isoformat(sep=" ", timespec="seconds")


def number(value: Any) -> str:
    """A figure for a person: thousands separated, two decimals, booleans in lower case."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


# --- shared options and loading ----------------------------------------------------------

# Functions rather than click.option(...) values, so that their types stay visible to mypy.


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


def utc_option(f: F) -> F:
    return click.option(
        "--utc", is_flag=True,
        help="Times in UTC; by default a terminal shows the lot's time (gateway.timezone of "
             "the config), and --json is always UTC.",
    )(f)


def time_zone(settings: Settings | None, utc: bool) -> tzinfo:
    """Where times are shown: the lot's zone, or UTC when asked or when no config is known."""
    return UTC if utc or settings is None else settings.gateway.tzinfo


def optional_settings(config_path: Path) -> Settings | None:
    """The config if there is one, for what it adds to a command that can do without it (the
    lot's time zone): none at the default path is fine; one given that does not load is not."""
    chosen = click.get_current_context().get_parameter_source("config_path")
    if chosen is not ParameterSource.DEFAULT:  # given, or from the environment
        return load_settings(config_path)
    if not config_path.exists():
        return None  # away from a gateway: times in UTC
    try:
        return load_config(config_path)
    except ConfigError as e:  # the gateway's own config, unreadable for this user, say
        click.echo(f"note: times in UTC, not using the config {config_path}: {e.problems[0]}",
                   err=True)
        return None


def png_path(_ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """A callback for an option naming a chart to write: matplotlib picks the format by the
    name's suffix, and raised a traceback for `x.txt`."""
    if value is not None and value.suffix.lower() != ".png":
        option = max(param.opts, key=len)
        raise InvalidInput(f"{option} {value}: the chart is a PNG; name a file ending in .png")
    return value


def folder_for(path: Path) -> None:
    """Make the folder that `path` is to be written into, and say so on stderr: every command
    that writes a file (`report -o`, `journal export -o`, `sim run --out`) takes a new folder
    alike, and a mistyped one is seen rather than made in silence."""
    folder = path.parent
    if folder.is_dir():
        return
    try:
        folder.mkdir(parents=True)
    except OSError as e:
        raise OperationalError(f"cannot create the folder {folder}: {e.strerror or e}") from None
    click.echo(f"created the folder {folder}", err=True)


def config_problems(path: Path, error: ConfigError) -> InvalidInput:
    """Print every problem of a config on stderr; the caller raises what this returns."""
    for problem in error.problems:
        click.echo(str(problem), err=True)
    count = len(error.problems)
    return InvalidInput(f"{path}: {count} problem{'s' if count != 1 else ''}")


def load_settings(path: Path) -> Settings:
    """The config at `path`; an invalid one is the technician's input error (exit 2)."""
    try:
        return load_config(path)
    except ConfigError as e:
        raise config_problems(path, e) from None


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run async library code; a journal that cannot be read is an operational failure."""
    try:
        return asyncio.run(work)
    except JournalError as e:
        raise OperationalError(str(e)) from None
