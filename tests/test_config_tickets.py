"""The ticket settings: the example's commented ticket tables load, and misplaced devices or
unbounded values are refused with their path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config import Settings, load_settings
from tests.conftest import EXAMPLE


def example_with_tickets(tmp_path: Path) -> Path:
    """The example config with its commented ticket lines put in force."""
    out: list[str] = []
    live = False
    for line in EXAMPLE.read_text().splitlines():
        opens = line.startswith(("# ticket = ", "# [lanes.printer]", "# [lanes.scanner]"))
        if opens or (live and line.startswith("# ") and not line.startswith("# # ")):
            live = True
            out.append(line[2:])
            continue
        if live and not line.startswith("# # "):
            live = False
        out.append(line)
    path = tmp_path / "gateway.toml"
    path.write_text("\n".join(out) + "\n")
    return path


def test_the_examples_ticket_tables_load(tmp_path: Path) -> None:
    settings = load_settings(example_with_tickets(tmp_path), env={})
    lanes = {lane.id: lane for lane in settings.lanes}
    printer = lanes["entry-north"].printer
    assert printer is not None
    assert printer.port.startswith("/dev/serial/by-id/")
    assert lanes["entry-north"].ticket_mode == "unreadable"
    assert lanes["exit"].scanner is not None
    assert lanes["entry-south"].ticket_mode == "off"  # no printer, no tickets


def lane_with(settings: Settings, lane_id: str, **extra: Any) -> dict[str, Any]:
    data = settings.model_dump(mode="json", by_alias=True, exclude_unset=True)
    lane = next(x for x in data["lanes"] if x["id"] == lane_id)
    lane.update(extra)
    return data


@pytest.mark.parametrize(("lane", "extra", "path"), [
    ("exit", {"printer": {"port": "/dev/ttyUSB1"}}, "lanes.2.printer"),
    ("entry-north", {"scanner": {"port": "/dev/ttyUSB2"}}, "lanes.0.scanner"),
    ("entry-north", {"printer": {"port": "/dev/ttyUSB1", "poll_s": 0}}, "lanes.0.printer.poll_s"),
    ("entry-north", {"ticket": "sometimes"}, "lanes.0.ticket"),
    ("exit", {"scanner": {"port": "/dev/ttyUSB2", "max_length": 5}}, "lanes.2.scanner"),
])
def test_ticket_devices_are_checked(tmp_path: Path, lane: str, extra: dict[str, Any],
                                    path: str) -> None:
    settings = load_settings(EXAMPLE, env={})
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate(lane_with(settings, lane, **extra))
    # A field's own bound is reported at its path; a lane's check names the key below the lane.
    lane_at, _, below = path.partition(".")[2].partition(".")
    where = [".".join(str(part) for part in error["loc"]) for error in caught.value.errors()]
    assert any(loc.startswith(path) for loc in where) or (
        f"lanes.{lane_at}" in where and f"{below}:" in str(caught.value)), where


def test_the_ticket_key_must_not_be_the_journal(tmp_path: Path) -> None:
    settings = load_settings(EXAMPLE, env={})
    data = settings.model_dump(mode="json", by_alias=True, exclude_unset=True)
    journal = data.setdefault("journal", {})
    journal["path"] = str(tmp_path / "journal.db")
    journal["ticket_key_file"] = str(tmp_path / "journal.db-wal")
    with pytest.raises(ValidationError, match="ticket_key_file"):
        Settings.model_validate(data)
