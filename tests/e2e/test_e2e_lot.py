"""A simulated lot day through the real daemon: about 2,000 vehicles, in virtual time.

The world drives the gateway through its real drivers (gpiozero mock pins, the sensor bus on a
pty running the firmware's code, cameras as frame sources); plates are read from the frames'
ground truth. Checked against what really happened in the world:

* every vehicle that entered and left has exactly one closed session, with the fee the tariff
  engine gives for its times; every vehicle still inside has one open session;
* the sensed bays' states and the vehicles inside equal the world's at the end;
* no barrier was ever commanded down over an occupied safety loop;
* tailgaters and anti-passback cases produced their events;
* cars whose plate the ticket entry cannot read took a ticket, paid by it and left on it
  through the exit's scanner, one session each;
* every event validates against its schema.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.core.tariff import PERMIT_FREE, quote
from tests.core.schemas import validate_cloudevent

# A simulated 24-hour day of the whole lot: about 170 s alone on 2 cores, and more than the
# suite's 300 s limit when other work shares them.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "hardware-sim" / "scenarios" / "e2e-day.toml"
HOURS = float(os.environ.get("E2E_HOURS", "24"))


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the day once for every check in this module."""
    from parking_sim.daemon import lot_run, outbox, sim_settings
    from parking_sim.scenario import load_scenario
    from parking_sim.vtime import TimeWarpLoop, VirtualClock

    scenario = load_scenario(SCENARIO)
    settings = sim_settings(scenario.settings(), tmp_path_factory.mktemp("e2e"))

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, TimeWarpLoop)
        clock = VirtualClock(loop, start=scenario.scenario.start)
        async with lot_run(settings, scenario, clock=clock, control=False,
                           render_frames=False, node_sample_period_s=0.5) as run:
            await run.world.run(HOURS * 3600)
            # Let the cars in the lanes finish and the bus report the last changes.
            for _ in range(60):
                if run.world.queued() == 0:
                    break
                await asyncio.sleep(10)
            await asyncio.sleep(3 * settings.bus.poll_interval_s + 5)  # type: ignore[union-attr]
            units = {bay.id: bay.sensor.unit_id for bay in settings.bays
                     if bay.sensor.kind == "modbus"}
            signer = run.gateway.sessions.tickets
            return {
                "events": await outbox(run.gateway),
                "truth": list(run.world.truth.events),
                "inside": run.world.inside,
                "open_sessions": len(run.gateway.access.inside),
                "session_plates": Counter(s.plate for s in
                                          run.gateway.access.inside.values()),
                "sensed": {bay_id: run.gateway.occupancy.bays[bay_id].state
                           for bay_id in units},
                "sensed_truth": {bay_id: "occupied" if run.world.bays.occupied(bay_id)
                                 else "free" for bay_id in units},
                "safety": run.world.safety_events(),
                "settings": settings,
                "lanes": {k: v.status() for k, v in run.gateway.lanes.items()},
                "source": f"urn:parking:{settings.gateway.lot_id}:"
                          f"{settings.gateway.gateway_id}",
                "records": await run.gateway.journal.read_outbox(0, 1_000_000),
                # Tickets: the text each driver took -> the session it names (the lot's key).
                "tickets": {e.ticket: signer.verify(e.ticket) for e in run.world.truth.events
                            if e.kind == "ticket" and e.ticket and signer is not None},
                "printed": sum(len(p.tickets) for p in run.printers.values()),
                "unclaimed": run.world.tickets_unclaimed,
                "scanned": [text for s in run.scanners.values() for text in s.sent],
                "scanner_lanes": set(run.scanners),
                "ticket_dues": dict(run.pay_station.ticket_dues),
                "inside_ids": set(run.gateway.access.inside),
                "settings_unreadable": scenario.camera.unreadable,
                "levels": {level_id: (run.gateway.counting.counts()[level_id],
                                      run.world.level_truth(level_id),
                                      run.world.ramps[level_id])
                           for level_id in (run.gateway.counting.levels
                                            if run.gateway.counting is not None else ())},
            }

    with asyncio.Runner(loop_factory=lambda: TimeWarpLoop(None, io_grace_s=0.0)) as runner:
        return runner.run(main())


def _of(day: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [data for type_, data in day["events"] if type_ == kind]


def test_about_two_thousand_vehicles_came(day: dict[str, Any]) -> None:
    arrived = sum(1 for e in day["truth"] if e.kind == "arrived")
    print(f"\narrived {arrived}; truth {Counter(e.kind for e in day['truth'])}; "
          f"events {Counter(t for t, _ in day['events'])}; lanes {day['lanes']}")
    assert arrived >= (1500 if HOURS >= 24 else 1)


def _tailgate_involved(truth: list[Any], within_s: float = 60.0) -> set[str]:
    """Plates of tailgaters, and of the cars that entered at their lane just after them."""
    involved: set[str] = set()
    entries = [e for e in truth if e.kind == "entered"]
    for i, e in enumerate(entries):
        if not e.tailgate:
            continue
        involved.add(e.plate)
        involved.update(f.plate for f in entries[i + 1:]
                        if f.lane == e.lane and 0 <= f.t - e.t <= within_s)
    return involved


def test_every_stay_has_exactly_one_session_with_the_tariffs_fee(day: dict[str, Any]) -> None:
    settings = day["settings"]
    # Ticket cars (no plate read: their sessions have none) are checked by their tickets in
    # test_ticket_cars_pay_by_ticket_and_leave_through_the_scanner; here, the rest.
    by_ticket = set(day["tickets"].values())
    entered: Counter[str] = Counter(e.plate for e in day["truth"]
                                    if e.kind == "entered" and not e.ticket)
    exited: Counter[str] = Counter(e.plate for e in day["truth"]
                                   if e.kind == "exited" and not e.ticket)
    started: Counter[str | None] = Counter(
        s.get("identifiedVehicle", {}).get("plate") for s in _of(day, "session.started")
        if s["sessionId"] not in by_ticket)
    every_end = _of(day, "session.ended")
    ended = [s for s in every_end if s["sessionId"] not in by_ticket]
    closed: Counter[str | None] = Counter(
        s.get("identifiedVehicle", {}).get("plate") for s in ended)
    # A tailgater whose plate the camera missed has a session all the same, with no plate.
    unread = started.pop(None, 0)
    assert unread <= sum(1 for e in day["truth"] if e.tailgate)
    # The traffic model may send a permit plate that is already inside (a cloned plate): the
    # soft anti-passback lets it in against the running session, and when the second car
    # leaves it has no entry record: a lost-ticket session, opened and closed at the exit.
    flagged = Counter(v["plate"] for v in _of(day, "violation.detected")
                      if v["kind"] == "anti_passback")
    lost = Counter(s.get("identifiedVehicle", {}).get("plate") for s in ended
                   if s["exitReason"] == "lost_ticket")
    missing = {p: (n, started.get(p, 0), flagged.get(p, 0), lost.get(p, 0))
               for p, n in entered.items()
               if started.get(p, 0) - lost.get(p, 0) + flagged.get(p, 0) != n}
    # A tailgater's plate is read from the frames as it passes; the camera may show the car
    # behind it instead, and that car's plate gets the tailgater's session (a known limit of
    # the follower read). Only a tailgater and the car right behind it can be affected.
    involved = _tailgate_involved(day["truth"])
    assert set(missing) <= involved, f"entries without a session: {missing}"
    assert len(missing) <= unread + 2 * sum(1 for e in day["truth"] if e.tailgate
                                            and e.kind == "entered"), missing
    # A tailgater slipping out behind another car leaves without the lane reading its plate
    # when it is too close to be in view: the violation is raised and its session stays open
    # (the backend pursues it). Any other exit must have closed its session.
    unclosed = {p for p, n in exited.items() if closed.get(p, 0) < n}
    slipped_out = {e.plate for e in day["truth"] if e.kind == "exited" and e.tailgate}
    assert unclosed <= slipped_out, unclosed - slipped_out
    _same_vehicles_inside(day)
    tz = settings.gateway.tzinfo
    for session in every_end:
        if session["exitReason"] == "lost_ticket":
            continue
        table_id = session["segments"][0].get("rateTableId")
        start = datetime.fromisoformat(session["actualStart"])
        end = datetime.fromisoformat(session["actualEnd"])
        if table_id == PERMIT_FREE:
            assert session["fee"]["amountMinor"] == 0
            continue
        expected = quote(settings.tariffs[table_id], start, end - timedelta(0), tz=tz)
        assert session["fee"]["amountMinor"] == expected.amount_minor, session


def _same_vehicles_inside(day: dict[str, Any]) -> None:
    """The plates inside are those with an open session; a clone shares its original's."""
    inside: Counter[str] = Counter()
    tickets: Counter[str] = Counter()  # ticket cars go by their ticket: no plate was read
    for e in day["truth"]:
        if e.kind in ("entered", "exited"):
            (tickets if e.ticket else inside)[e.ticket or e.plate] += (
                1 if e.kind == "entered" else -1)
    plates = {p for p, n in inside.items() if n > 0}
    held = {day["tickets"][t] for t, n in tickets.items() if n > 0}
    assert held <= day["inside_ids"], "a ticket car inside has no open session"
    sessions = Counter(day["session_plates"])
    unread = sessions.pop(None, 0) - len(held)
    slipped_out = {e.plate for e in day["truth"] if e.kind == "exited" and e.tailgate}
    assert sum(inside.values()) + len(held) == day["inside"]
    assert plates - set(sessions) == set() or len(plates - set(sessions)) <= unread
    assert set(sessions) - plates <= slipped_out, set(sessions) - plates - slipped_out


def test_the_bays_and_the_vehicles_inside_match_the_world(day: dict[str, Any]) -> None:
    assert day["sensed"] == day["sensed_truth"]
    _same_vehicles_inside(day)


def test_no_barrier_came_down_over_an_occupied_safety_loop(day: dict[str, Any]) -> None:
    assert [e for e in day["safety"] if e.kind == "commanded_down_onto_vehicle"] == []


def test_tailgaters_and_anti_passback_produced_their_events(day: dict[str, Any]) -> None:
    violations = Counter(v["kind"] for v in _of(day, "violation.detected"))
    tailgates = sum(1 for e in day["truth"] if e.kind in ("entered", "exited") and e.tailgate)
    assert tailgates > 0
    seen = sorted((v.get("plate") or "?", v["laneId"]) for v in _of(day, "violation.detected")
                  if v["kind"] == "tailgating")
    real = sorted((e.plate, e.lane) for e in day["truth"]
                  if e.kind in ("entered", "exited") and e.tailgate)
    # The loops see a tailgater less than a metre behind as one long vehicle; the lane tells
    # them apart by length, which a long car at speed can blur. The camera may not catch the
    # follower's plate ("?"). Most are caught, few false ones are raised:
    named = len(set(seen) & set(real))
    unread = seen.count(("?", "entry-a")) + seen.count(("?", "entry-b")) + seen.count(
        ("?", "exit"))
    print(f"\ntailgates: truth {tailgates}, reported {len(seen)} ({named} with the right plate,"
          f" {unread} unread)")
    # Measured on this day's seed: 42 of 53 (79%) named, 43 reported, with 5% of the plates
    # unreadable (ticket cars) and the simulated drivers also taking a barrier raised for
    # them before they reach the loop (more cars pass close together).
    assert named + unread >= 0.75 * tailgates, f"seen {seen}, truth {real}"
    assert len(seen) <= tailgates * 1.1 + 2, f"seen {seen}, truth {real}"
    # A plate seen entering while the gateway holds it inside (a cloned or misread plate).
    inside: set[str] = set()
    passback = 0
    for e in day["truth"]:
        if e.ticket:
            continue  # no plate read: a ticket is its own credential
        if e.kind == "entered":
            if e.plate in inside:
                passback += 1
            inside.add(e.plate)
        elif e.kind == "exited":
            inside.discard(e.plate)
    # A tailgater's session under the plate of the car behind it (the follower read's limit)
    # makes that car's own entry an anti-passback: one more for each such misread.
    misread = sum(1 for plate, lane in seen
                  if plate != "?" and lane.startswith("entry") and (plate, lane) not in real)
    assert passback <= violations["anti_passback"] <= passback + misread
    # Every deny-listed plate the lanes read was refused and reported; none got a session.
    denied = {e.plate for e in day["truth"] if e.population == "denied"}
    reported = {v["plate"] for v in _of(day, "violation.detected") if v["kind"] == "deny_listed"}
    assert reported
    assert reported <= denied
    admitted = {s.get("identifiedVehicle", {}).get("plate") for s in _of(day, "session.started")}
    assert not admitted & denied


def test_every_event_validates_against_its_schema(day: dict[str, Any]) -> None:
    per_type: defaultdict[str, int] = defaultdict(int)
    for record in day["records"]:
        validate_cloudevent(json.loads(record.to_json(day["source"])))
        per_type[record.type] += 1
    assert per_type["session.started"] > 0
    assert per_type["occupancy.hourly"] >= (23 if HOURS >= 24 else 0)


def test_the_counted_level_matches_the_worlds_truth(day: dict[str, Any]) -> None:
    """The roof counted at its ramp ends the day with the world's vehicles on it, but for
    vehicles that went up or down bumper to bumper (the loops see one long vehicle)."""
    assert day["levels"], "the e2e lot has a level counted at its ramps"
    for level_id, (count, truth, ramp) in day["levels"].items():
        print(f"\nlevel {level_id}: count {count}, truth {truth}, {ramp.crossings} crossings,"
              f" {ramp.close_follows} bumper to bumper, {ramp.back_outs} backed out")
        assert ramp.crossings > (20 if HOURS >= 24 else 0)
        assert abs(count - truth) <= ramp.close_follows
    counted = _of(day, "level.counted")
    assert counted
    assert all(c["cause"] == "ramp" for c in counted)


def test_ticket_cars_pay_by_ticket_and_leave_through_the_scanner(day: dict[str, Any]) -> None:
    """Entry A's camera cannot read some plates: each such car took one ticket from the printer,
    had one session under it (a ticket credential, no plate), paid the tariff's fee by it at
    the pay station and left through the exit's scanner; no ticket was refused."""
    settings = day["settings"]
    tickets: dict[str, str] = day["tickets"]  # ticket text -> its session
    took = [e for e in day["truth"] if e.kind == "ticket"]
    if not took and day["settings_unreadable"] == 0:
        pytest.skip("every plate is read in this day (e2e-day.toml [camera] unreadable = 0); "
                    "tests/sim/test_ticket_day.py runs ticket cars on this lot")
    print(f"\ntickets: {len(took)} taken, {day['printed']} printed, {len(day['scanned'])} scans,"
          f" lanes {[day['lanes'][lane].get('tickets') for lane in sorted(day['lanes'])]}")
    assert len(took) >= (20 if HOURS >= 24 else 0)
    assert day["printed"] == len(took)
    assert day["unclaimed"] == 0
    assert len(set(tickets.values())) == len(took)  # one session per ticket
    for lane in day["scanner_lanes"]:
        assert day["lanes"][lane]["tickets"] == {"invalid": 0, "refused": 0}
    started = Counter(s["sessionId"] for s in _of(day, "session.started"))
    started_as = {s["sessionId"]: s for s in _of(day, "session.started")}
    ended: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in _of(day, "session.ended"):
        ended[s["sessionId"]].append(s)
    paid_at = {json.loads(r.data_json)["paymentId"]: datetime.fromisoformat(r.time)
               for r in day["records"] if r.type == "payment.recorded"}
    payments: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in _of(day, "payment.recorded"):
        payments[p["sessionId"]].append(p)
    came_in = [e for e in day["truth"] if e.kind == "entered" and e.ticket]
    assert came_in
    for e in came_in:
        session_id = tickets[e.ticket]
        assert started[session_id] == 1, e
        session = started_as[session_id]
        assert {"type": "ticket", "identifier": session_id} in session["identifiedCredentials"]
        assert "identifiedVehicle" not in session
    left = [e for e in day["truth"] if e.kind == "exited" and e.ticket]
    assert len(left) >= (10 if HOURS >= 24 else 0)
    unpaid = 0
    for e in left:
        session_id = tickets[e.ticket]
        assert e.lane in day["scanner_lanes"]
        assert e.ticket in day["scanned"]
        [end] = ended[session_id]
        table = settings.tariffs[end["segments"][0]["rateTableId"]]
        start = datetime.fromisoformat(end["actualStart"])
        paid = 0
        for p in sorted(payments[session_id], key=lambda p: paid_at[p["paymentId"]]):
            # What the tariff charged for the stay up to the payment, less what was paid before.
            due = quote(table, start, paid_at[p["paymentId"]], tz=settings.gateway.tzinfo)
            assert p["amount"]["amountMinor"] == due.amount_minor - paid, (p, end)
            paid += p["amount"]["amountMinor"]
        if end["exitReason"] == "normal":
            assert paid > 0 or end["fee"]["amountMinor"] == 0, end
        else:
            # Nothing was due yet at the pay station (the tariff's first minutes are free), and
            # the free minutes ran out on the way to the exit: this lot, offline (no broker in
            # the test), lets such a car out unpaid rather than hold it at the barrier.
            assert end["exitReason"] == "unable_to_collect", end
            assert paid == 0, end
            assert set(day["ticket_dues"].get(session_id, [])) == {0}, end
            unpaid += 1
    assert unpaid <= len(left) // 4 + 1
