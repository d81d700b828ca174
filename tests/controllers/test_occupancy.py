"""Bay states, counts, lot full, violations and hourly utilisation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.config import BayConfig, LotConfig
from gateway.controllers.occupancy import Occupancy
from gateway.core.clock import FakeClock
from gateway.drivers import BayReading
from gateway.journal import Journal


def bays() -> list[BayConfig]:
    out = []
    for i in range(6):
        out.append(BayConfig(id=f"A-{i}", floor="1", zone="A", type="regular",
                             sensor={"kind": "modbus", "unit_id": i + 1}))  # type: ignore[arg-type]
    out.append(BayConfig(id="EV-1", floor="2", zone="B", type="ev",
                         sensor={"kind": "modbus", "unit_id": 20}))  # type: ignore[arg-type]
    out.append(BayConfig(id="L-1", floor="2", zone="B", type="loading", max_stay_minutes=10,
                         sensor={"kind": "modbus", "unit_id": 21}))  # type: ignore[arg-type]
    return out


def reading(clock: FakeClock, bay: str, state: str, fault: str | None = None) -> BayReading:
    return BayReading(bay, state, f"modbus:{bay}", clock.stamp(), fault)  # type: ignore[arg-type]


@pytest.fixture
def occupancy(journal: Journal, clock: FakeClock) -> Occupancy:
    return Occupancy(bays(), LotConfig(full_when_free_at_most=1), journal, clock)


async def outbox(journal: Journal, type_: str) -> list[dict[str, Any]]:
    return [json.loads(r.data_json) for r in await journal.read_outbox(0, 10_000)
            if r.type == type_]


async def test_states_counts_and_one_event_per_change(occupancy: Occupancy, journal: Journal,
                                                      clock: FakeClock) -> None:
    for bay in occupancy.bays:
        await occupancy.apply([reading(clock, bay, "free")])
    assert occupancy.counts().as_dict() == {"free": 8, "occupied": 0, "unknown": 0,
                                            "outOfService": 0}
    assert await occupancy.apply([reading(clock, "A-0", "occupied"),
                                  reading(clock, "A-0", "occupied")]) == 1
    assert await occupancy.apply([reading(clock, "A-0", "occupied")]) == 0  # no change, no write
    summary = occupancy.summary()
    assert summary["byFloor"]["1"] == {"free": 5, "occupied": 1, "unknown": 0, "outOfService": 0}
    assert summary["byType"]["ev"]["free"] == 1
    changes = await outbox(journal, "bay.changed")
    assert len(changes) == 9
    assert changes[-1]["previousState"] == "free"
    assert (await journal.bay_states())["A-0"].state == "occupied"


async def test_a_faulty_sensor_makes_its_bay_unknown_never_free(
        occupancy: Occupancy, clock: FakeClock) -> None:
    await occupancy.apply([reading(clock, "A-1", "occupied")])
    await occupancy.apply([reading(clock, "A-1", "free", fault="node silent")])
    bay = occupancy.bays["A-1"]
    assert (bay.state, bay.healthy) == ("unknown", False)
    assert occupancy.free == 0


async def test_lot_full_counts_only_free_bays_in_service(
        occupancy: Occupancy, clock: FakeClock) -> None:
    await occupancy.apply([reading(clock, b, "occupied") for b in occupancy.bays])
    await occupancy.apply([reading(clock, "A-0", "free"), reading(clock, "A-1", "free")])
    assert not occupancy.full  # 2 free > 1
    await occupancy.set_service("A-1", False, actor="cli:root")
    assert occupancy.full
    assert occupancy.counts().out_of_service == 1


async def test_violations_out_of_service_in_use_and_overstay_reported_once(
        occupancy: Occupancy, journal: Journal, clock: FakeClock) -> None:
    await occupancy.set_service("A-2", False, actor="cli:root")
    await occupancy.apply([reading(clock, "A-2", "occupied"), reading(clock, "EV-1", "occupied"),
                           reading(clock, "L-1", "occupied")])
    clock.advance(11 * 60)
    assert await occupancy.check_overstays() == 1  # the loading bay's own 10 min limit
    clock.advance(4 * 3600)
    assert await occupancy.check_overstays() == 1  # the EV bay, 4 h; loading already reported
    assert await occupancy.check_overstays() == 0
    kinds = [(v["kind"], v["bayId"]) for v in await outbox(journal, "violation.detected")]
    assert kinds == [("out_of_service_bay", "A-2"), ("overstay", "L-1"), ("overstay", "EV-1")]


async def test_hourly_utilisation_is_time_weighted(occupancy: Occupancy, journal: Journal,
                                                   clock: FakeClock) -> None:
    start = clock.now()
    to_hour = 3600 - (start.minute * 60 + start.second + start.microsecond / 1e6)
    await occupancy.apply([reading(clock, b, "free") for b in occupancy.bays])
    clock.advance(to_hour)  # align to a clock hour
    assert await occupancy.roll_hour()
    await occupancy.apply([reading(clock, "A-0", "occupied"), reading(clock, "A-1", "occupied")])
    occupancy.note_passage("entry")
    occupancy.note_passage("entry")
    clock.advance(1800)
    await occupancy.apply([reading(clock, "A-1", "free")])
    clock.advance(1800)
    assert await occupancy.roll_hour()
    assert not await occupancy.roll_hour()
    hour = (await outbox(journal, "occupancy.hourly"))[-1]
    (group,) = [g for g in hour["groups"] if g["zone"] == "A"]
    assert group["occupiedMax"] == 2
    assert group["occupiedAvg"] == pytest.approx(1.5, abs=0.01)  # 2 for 30 min, 1 for 30 min
    assert group["capacity"] == 6
    assert (hour["entries"], hour["exits"]) == (2, 0)


async def test_restore_begins_from_the_journaled_states(journal: Journal,
                                                        clock: FakeClock) -> None:
    first = Occupancy(bays(), LotConfig(), journal, clock)
    await first.apply([reading(clock, "A-0", "occupied"), reading(clock, "A-3", "free")])
    second = Occupancy(bays(), LotConfig(), journal, clock)
    await second.restore(await journal.lot_settings())
    assert (second.bays["A-0"].state, second.bays["A-3"].state) == ("occupied", "free")
    assert second.bays["A-4"].state == "unknown"  # never reported: not assumed free


async def test_bays_without_a_sensor_are_filled_by_the_vehicles_no_sensor_accounts_for(
        journal: Journal, clock: FakeClock) -> None:
    counted = [BayConfig(id=f"N-{i}", floor="0", zone="N",
                         sensor={"kind": "none"}) for i in range(4)]  # type: ignore[arg-type]
    occupancy = Occupancy([*bays()[:2], *counted], LotConfig(), journal, clock)
    inside = 0
    occupancy.vehicles_inside = lambda: inside
    await occupancy.apply([reading(clock, "A-0", "occupied"), reading(clock, "A-1", "free")])
    assert occupancy.free == 5  # A-1 and the four counted bays
    inside = 3  # one in A-0, two somewhere unwatched
    assert occupancy.counts().as_dict() == {"free": 3, "occupied": 3, "unknown": 0,
                                            "outOfService": 0}
    inside = 40
    assert occupancy.free == 1  # never below zero: the counted bays are simply full
    assert occupancy.summary()["counted"] == {"capacity": 4, "occupied": 4}
