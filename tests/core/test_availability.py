"""The availability document: counts by floor, zone and type that always agree, counted bays
shared out exactly, the method named, and the published schema matched."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from gateway.core.availability import (
    BAY_TYPES,
    SCHEMA,
    Availability,
    Place,
    Where,
    availability,
    tally,
)
from gateway.core.events import BayState

AT = datetime(2026, 12, 7, 9, 30, 0, 123456, tzinfo=UTC)
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "availability.json"
VALIDATOR = Draft202012Validator(SCHEMA)


def doc(places: list[Place], inside: int = 0, where: Where | None = None,
        state: Any = "open") -> dict[str, Any]:
    return availability(places, inside=inside, lot_id="lot", gateway_id="gw", at=AT,
                        lot_state=state, where=where)


SENSED = [Place("0", "A", "regular", "free"), Place("0", "A", "regular", "occupied"),
          Place("0", "B", "ev", "unknown"), Place("1", "B", "regular", "free", False)]


def test_a_sensed_lot_counts_each_bay_by_its_state() -> None:
    d = doc(SENSED)
    assert d["lot"] == {"total": 4, "free": 1, "occupied": 1, "unknown": 1, "outOfService": 1,
                        "held": 0, "percentage": 33.3, "occupancyMethod": "sensed"}
    assert (d["version"], d["lotId"], d["gatewayId"]) == (1, "lot", "gw")
    assert d["recordDateTime"] == "2026-12-07T09:30:00.123456Z"
    assert (d["lotState"], d["occupancyMethod"]) == ("open", "sensed")
    assert d["floors"]["1"] == {"total": 1, "free": 0, "occupied": 0, "unknown": 0,
                                "outOfService": 1, "held": 0, "percentage": 0.0,
                                "occupancyMethod": "sensed"}
    assert set(d["zones"]) == {"A", "B"}
    assert d["bayTypes"]["ev"]["unknown"] == 1
    assert "filter" not in d


def test_counted_bays_take_the_vehicles_no_sensed_bay_holds() -> None:
    counted = [Place("1", "C", "regular", None)] * 4
    # 3 inside, 1 of them in a sensed bay: 2 of the 4 counted bays are taken.
    d = doc(SENSED + counted, inside=3)
    assert d["lot"]["occupied"] == 3
    assert d["lot"]["free"] == 1 + 2
    assert d["occupancyMethod"] == "derived"
    assert d["zones"]["C"]["occupancyMethod"] == "counted"
    assert d["zones"]["A"]["occupancyMethod"] == "sensed"
    assert d["floors"]["1"]["occupancyMethod"] == "derived"
    assert doc(counted, inside=9)["lot"]["occupied"] == 4  # never more than the room
    assert doc(SENSED + counted, inside=0)["lot"]["occupied"] == 1  # never fewer than sensed


def test_the_lot_counts_as_the_occupancy_controller_does() -> None:
    """A car in an out-of-service bay is not taken off the counted bays, as `Occupancy.counts`
    does it: the lanes decide on that number, and availability must show the same."""
    places = [Place("0", "A", "regular", "occupied", False), Place("0", "A", "regular", None)]
    assert doc(places, inside=1)["lot"]["free"] == 0


def test_counted_bays_are_shared_out_exactly_and_alike_every_time() -> None:
    counted = ([Place("0", "A", "regular", None)] * 3 + [Place("1", "A", "regular", None)] * 3
               + [Place("2", "B", "ev", None)] * 1)
    d = doc(counted, inside=4)
    shares = [d["floors"][f]["occupied"] for f in ("0", "1", "2")]
    assert sum(shares) == 4
    assert shares == [2, 2, 0]  # quotas 12/7, 12/7, 4/7: the largest remainders win
    one_each = [Place(floor, "A", "regular", None) for floor in ("0", "1", "2")]
    tied = doc(one_each, inside=2)
    assert [tied["floors"][f]["occupied"] for f in ("0", "1", "2")] == [1, 1, 0]  # in order
    shuffled = counted[:]
    random.Random(1).shuffle(shuffled)
    assert doc(shuffled, inside=4) == d


@st.composite
def lots(draw: st.DrawFn) -> tuple[list[Place], int]:
    states: list[BayState | None] = [*get_args(BayState), None]
    places = draw(st.lists(st.builds(
        Place, st.sampled_from(["-1", "0", "1"]), st.sampled_from(["A", "B"]),
        st.sampled_from(BAY_TYPES), st.sampled_from(states), st.booleans()), max_size=60))
    return places, draw(st.integers(0, 80))


@given(lots())
def test_every_view_is_the_sum_of_its_cells(lot: tuple[list[Place], int]) -> None:
    places, inside = lot
    d = doc(places, inside)
    VALIDATOR.validate(d)
    keys = ("total", "free", "occupied", "unknown", "outOfService", "held")
    for groups in (d["floors"], d["zones"], d["bayTypes"]):
        for key in keys:
            assert sum(g[key] for g in groups.values()) == d["lot"][key]
    lot_counts = d["lot"]
    assert lot_counts["total"] == len(places)
    assert (lot_counts["free"] + lot_counts["occupied"] + lot_counts["unknown"]
            + lot_counts["outOfService"]) == lot_counts["total"]
    for floor, counts in d["floors"].items():
        narrowed = doc(places, inside, Where(floor=floor))
        assert narrowed["lot"] == counts
        assert narrowed["filter"] == {"floor": floor}


def test_a_filter_narrows_every_figure() -> None:
    d = doc(SENSED, where=Where(zone="B", bay_type="ev"))
    assert d["filter"] == {"zone": "B", "bayType": "ev"}
    assert d["lot"]["total"] == 1
    assert list(d["floors"]) == ["0"]
    VALIDATOR.validate(d)


def test_the_same_counts_at_another_time_are_nothing_new() -> None:
    cells = tally(SENSED, inside=0)
    first = Availability("lot", "gw", AT, "open", cells)
    later = Availability("lot", "gw", AT.replace(hour=10), "open", tally(SENSED, inside=0))
    assert later.same_as(first)
    assert not Availability("lot", "gw", AT, "closed", cells).same_as(first)
    assert not first.same_as(None)
    assert first.has(Where(floor="1"))
    assert not first.has(Where(floor="9"))
    assert first.names() == {"floor": ["0", "1"], "zone": ["A", "B"], "type": ["ev", "regular"]}


def test_held_is_zero_until_bays_are_held_for_reservations() -> None:
    d = doc([*SENSED, Place("0", "A", "reserved", "free")])
    assert all(g["held"] == 0 for g in [d["lot"], *d["bayTypes"].values()])
    assert "0 until" in SCHEMA["$defs"]["counts"]["properties"]["held"]["description"]


def test_the_published_schema_is_the_one_in_the_code() -> None:
    """docs/schemas/availability.json is SCHEMA written out; write it again with
    python -c 'import json; from gateway.core.availability import SCHEMA;
    print(json.dumps(SCHEMA, indent=2, ensure_ascii=False))' > docs/schemas/availability.json
    """
    Draft202012Validator.check_schema(SCHEMA)
    assert json.loads(SCHEMA_FILE.read_text(encoding="utf-8")) == SCHEMA


@pytest.mark.parametrize("broken", [
    {"lotState": "half"}, {"version": 2}, {"recordDateTime": None},
    {"lot": {"total": 1}}, {"bayTypes": {"truck": {}}}, {"extra": 1},
])
def test_the_schema_refuses_what_the_gateway_never_sends(broken: dict[str, Any]) -> None:
    d = {**doc(SENSED), **broken}
    assert not VALIDATOR.is_valid(d)
