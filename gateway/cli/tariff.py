"""`parking-gateway tariff quote`: price a stay with the configured tariffs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from gateway.cli.common import (
    EXIT_CODES,
    InvalidInput,
    Section,
    config_option,
    json_option,
    load_settings,
    print_json,
    print_sections,
)
from gateway.core.tariff import (
    Quote,
    UnknownValidationError,
    local_to_utc,
    lost_ticket_quote,
    money,
    quote,
)


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
    """A naive time is lot-local wall time, read as the tariff reads band edges (DST).

    Raises ValueError for a time whose instant is beyond the calendar's end (year 1, 9999).
    """
    if value.tzinfo is None:
        return local_to_utc(value, tz)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} is beyond the calendar's end") from None


@click.group()
def tariff() -> None:
    """Price stays with the configured tariffs."""


@tariff.command("quote", epilog=EXIT_CODES)
@config_option
@click.option("--entry", metavar="ISO8601", callback=_parse_time, help="When the stay began.")
@click.option("--exit", "exit_", metavar="ISO8601", callback=_parse_time, help="When it ended.")
@click.option("--tariff", "tariff_name", metavar="NAME",
              help="A table under [tariffs] (any case); default: gateway.default_tariff.")
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
    settings = load_settings(config_path)
    # Matched in lower case, as the config's comment says: its names are lower case.
    name = (tariff_name or settings.gateway.default_tariff).lower()
    table = settings.tariffs.get(name)
    if table is None:
        defined = ", ".join(sorted(settings.tariffs))
        raise InvalidInput(f"unknown tariff {name!r} (defined: {defined})")
    if lost_ticket and table.lost_ticket_minor is None:
        priced = [n for n, t in sorted(settings.tariffs.items()) if t.lost_ticket_minor is not None]
        raise InvalidInput(f"--lost-ticket: tariff {name!r} has no lost_ticket_minor, so a lost"
                           f" ticket cannot be priced by it (tariffs with one:"
                           f" {', '.join(priced) or 'none'})")
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
        print_json(result.to_json())
        return
    print_sections([Section("stay", stay), _fee_section(result, tz)])


SHOWN_LINES = 200  # a century's quote has some 180,000 lines: a person reads the first ones


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
        for line in result.lines[:SHOWN_LINES]
    ]
    if (hidden := len(result.lines) - SHOWN_LINES) > 0:
        timed.append(("", "", f"... and {hidden:,} more lines (--json lists them all)", ""))
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


