"""What `parking-gateway demo` shows (issue 20, items 3 and 4): a live header within 100
columns, the control socket to try the technician's commands on, and a closing summary in
prose and tables with money in its currency. Before, the header ran past 100 columns and the
summary printed Python dict reprs and `fees minor 3050`."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from parking_sim.demo import facts, header, summary_sections, summary_text
from rich.console import Console

from gateway.cli.common import Section

SUMMARY: dict[str, Any] = {
    "real_seconds": 90.2, "lot_time": "2026-03-02T09:00:23+01:00",
    "backend": "MQTT 127.0.0.1:1883: offline, buffering",
    "vehicles": {"arrived": 240, "entered": 213, "exited": 35, "refused": 21, "reversed": 7,
                 "tailgates": 4},
    "sessions": {"started": 212, "ended": 35, "open": 177, "inside_truth": 178},
    "currency": "EUR", "fees_minor": 3050, "payments": 11, "payments_minor": 2200,
    "violations": {"deny_listed": 13, "tailgating": 3, "anti_passback": 1},
    "bays": {"free": 124, "occupied": 177, "unknown": 0, "outOfService": 0},
    "events_journaled": 825, "events_unsynced": 825, "barrier_safety_events": 0,
    "journal": "/tmp/demo/journal.db", "control_socket": "/tmp/demo/control.sock", "start": 1,
}


def rendered(text: Any, width: int = 100) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(text)
    return console.export_text().splitlines()


def test_the_live_header_fits_100_columns_and_names_the_socket() -> None:
    now = datetime(2026, 3, 4, 23, 59, 59, tzinfo=ZoneInfo("Europe/Berlin"))  # a Wednesday
    socket = Path("/tmp/parking-gateway-demo-k2x9_q1c/control.sock")  # as mkdtemp names it

    lines = rendered(header(now, 86399.0, "closed",
                            "MQTT broker.example.com:18883: offline, buffering", socket))

    assert lines == [
        "parking-gateway demo   lot time Wed 23:59:59   real 86399 s   lot closed",
        "backend: MQTT broker.example.com:18883: offline, buffering",
        f"try: parking-gateway status --socket {socket}",
    ]
    assert max(len(line) for line in lines) <= 100


def test_the_lots_figures_fit_100_columns() -> None:
    lines = rendered(facts(12345, 12346, {"arrived": 99999, "entered": 99999, "exited": 99999,
                                          "refused": 99999}, 9_999_999, 9_999_999))

    assert len(lines) == 3  # none wrapped
    assert max(len(line) for line in lines) <= 100


def test_the_summary_reads_as_prose_with_money_in_its_currency() -> None:
    text = summary_text(SUMMARY)

    assert "35 stays ended at the exit, with fees of 30.50 EUR; 11 payments took 22.00 EUR" in text
    assert "240 vehicles arrived: 213 entered, 35 left, 21 were refused" in text
    assert "the lot's clock stopped at 2026-03-02 09:00:23+01:00" in text
    assert "No barrier came down on a vehicle." in text
    assert "{" not in text
    assert "minor" not in text


def test_the_summary_tables_name_their_rows_for_a_person() -> None:
    sections = {s.title: s for s in summary_sections(SUMMARY)}

    assert list(sections) == ["sessions", "bays with sensors now", "violations"]
    assert dict(sections["violations"].rows) == {"anti passback": "1", "deny listed": "13",
                                                 "tailgating": "3"}
    assert dict(sections["bays with sensors now"].rows)["out of service"] == "0"
    cells = [cell for s in sections.values() for row in s.rows for cell in row]
    assert not any("{" in cell or "_" in cell for cell in cells)
    assert all(isinstance(s, Section) for s in sections.values())
