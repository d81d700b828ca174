"""`bench retention`: a day of the lot repeated through the journal, with and without retention."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from gateway.bench.retention import generate_day, read_day, shift_token, template
from gateway.cli.main import cli
from gateway.core.events import EventType, envelope_json, source_uri
from tests.core.schemas import validate_cloudevent

TRAFFIC = 0.1  # a tenth of the e2e lot's cars: enough for each kind of row, and quick


def bench(*args: object) -> tuple[int, Any]:
    result = CliRunner().invoke(cli, ["bench", "retention", "--json", *map(str, args)])
    return result.exit_code, json.loads(result.stdout) if result.exit_code == 0 else result.output


def test_three_days_keep_what_each_retention_says(tmp_path: Path) -> None:
    day = generate_day(traffic=TRAFFIC)
    refused = sum(e.type is EventType.VIOLATION_DETECTED and "plate" in e.data
                  and "sessionId" not in e.data for e in day)
    started = {e.data["sessionId"] for e in day if e.type is EventType.SESSION_STARTED}
    overnight = sum(e.type is EventType.SESSION_ENDED and e.data["sessionId"] not in started
                    for e in day)
    code, result = bench("--days", "3", "--every", "2", "--traffic", TRAFFIC, "--dir", tmp_path)
    assert code == 0, result
    assert (result["day"], result["events_per_day"]) == ("generated", len(day))
    assert [row["day"] for row in result["sizes"]] == [2, 3]
    held = result["held"]
    assert held["none"]["events"] == held["events_only"]["events"] == 3 * len(day)
    # Three days are too few for the other retentions; the refused plates of the first two
    # days are past their 24 hours when the third ends.
    assert held["retention"]["events"] == 3 * len(day) - 2 * refused
    # Each day's cars that stay overnight leave the next day, from the session it opened.
    assert held["none"]["sessions_open"] == overnight > 0
    assert held["none"]["sessions_closed"] == 3 * len(started) - overnight
    sizes = result["sizes"][-1]["bytes"]
    assert sizes["retention"] <= sizes["none"] == sizes["events_only"]
    assert {p.name for p in tmp_path.glob("*.db")} == {
        "none.db", "events_only.db", "retention.db"}


def test_a_recorded_day_is_repeated_and_a_bad_file_refused(tmp_path: Path) -> None:
    source = source_uri("demo-lot", "gw-demo")
    day = generate_day(traffic=TRAFFIC)[:300]
    recorded = tmp_path / "day.jsonl"
    recorded.write_text("".join(envelope_json(source=source, sequence=n, id=e.id,
                                              type=e.type.value, time=e.time,
                                              data_json=e.data_json) + "\n"
                                for n, e in enumerate(day, 1)))
    assert read_day(recorded) == day
    code, result = bench("--days", "2", "--day", recorded)
    assert code == 0, result
    assert (result["day"], result["events_per_day"]) == ("recorded", 300)
    assert result["held"]["none"]["events"] == 600
    (tmp_path / "bad.jsonl").write_text('{"type": "org.parking.v1.nothing"}\n')
    code, output = bench("--day", tmp_path / "bad.jsonl")
    assert code == 2
    assert "bad.jsonl:1: not an exported event" in output


def test_a_day_moved_on_has_new_ids_and_dates_and_its_own_valid_events() -> None:
    event = next(e for e in generate_day(traffic=TRAFFIC) if e.type is EventType.SESSION_ENDED)
    parts = template(event.data_json)
    assert isinstance(parts, tuple)
    tokens = parts[1::2]
    assert event.data["sessionId"] in tokens
    assert event.data["actualEnd"][:10] in tokens
    moved = "".join(p if i % 2 == 0 else shift_token(p, 2) for i, p in enumerate(parts))
    data = json.loads(moved)
    assert data["sessionId"] == shift_token(event.data["sessionId"], 2) != event.data["sessionId"]
    assert shift_token(data["sessionId"], -2) == event.data["sessionId"]
    assert data["actualEnd"][10:] == event.data["actualEnd"][10:]
    validate_cloudevent(json.loads(envelope_json(
        source="urn:parking:demo-lot:gw-demo", sequence=1, id=shift_token(event.id, 2),
        type=event.type.value, time=event.time, data_json=moved)))
