"""Ticket cars in a simulated lot run by the real daemon: the simulator's printer and scanner on
ptys (handed to the gateway as `HardwareOverrides.printer_ports` / `scanner_ports`), plates the
ticket entry cannot read, drivers who keep their ticket, pay by it and leave on it.

The end-to-end day (tests/e2e/test_e2e_lot.py) checks the same over a whole day; this hour with
half the plates at the ticket entry unreadable and the backend online (an unpaid ticket is
refused at the exit, and its driver pays and comes back) runs in seconds.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from parking_sim.camera import GroundTruthReader, Shown, SimCamera
from parking_sim.daemon import lot_run, outbox, sim_settings
from parking_sim.scenario import Scenario
from parking_sim.vtime import TimeWarpLoop, VirtualClock

from gateway.core.clock import FakeClock

ROOT = Path(__file__).resolve().parents[2]
LOT = ROOT / "hardware-sim" / "scenarios" / "e2e-lot.toml"  # a printer at entry-a, a scanner


def ticket_scenario(unreadable: float) -> Scenario:
    return Scenario.model_validate({
        "scenario": {"name": "tickets", "hours": 1, "seed": 4, "sample_s": 60,
                     "start": "2026-03-02T09:00:00+01:00"},
        "lot": {"config": str(LOT)},
        # Stays past the tariff's 15 free minutes: every ticket car has something to pay.
        "traffic": {"rate_per_hour": [60.0] * 24, "stay_mean_min": 25, "stay_sd_min": 5,
                    "stay_min_min": 20, "stay_max_min": 30},
        "population": {"permit": 0.0, "reservation": 0.0, "visitor": 1.0, "denied": 0.0},
        "driving": {"tailgate_prob": 0.0, "reverse_prob": 0.0, "to_bay_s": [10, 30]},
        "camera": {"unreadable": unreadable},
    })


def ticket_hour(unreadable: float) -> dict[str, Any]:
    scenario = ticket_scenario(unreadable)

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        settings = sim_settings(scenario.settings(), Path(tempfile.mkdtemp(prefix="tickets-")))
        clock = VirtualClock(loop, start=scenario.scenario.start)
        async with lot_run(settings, scenario, clock=clock, control=False, render_frames=False,
                           pay_share=0.0, node_sample_period_s=1.0) as lot:
            lot.gateway.online = lambda: True  # type: ignore[method-assign]
            await lot.world.run(3600)
            for _ in range(90):  # the last stays end, their cars leave
                if lot.world.inside == 0 and lot.world.queued() == 0:
                    break
                await asyncio.sleep(30)
            signer = lot.gateway.sessions.tickets
            assert signer is not None
            truth = lot.world.truth.events
            return {
                "truth": truth,
                "sessions": {e.ticket: signer.verify(e.ticket) for e in truth
                             if e.kind == "ticket" and e.ticket},
                "printed": [t.qr for t in lot.printers["entry-a"].tickets],
                "scanned": list(lot.scanners["exit"].sent),
                "by_ticket": lot.pay_station.by_ticket,
                "api_answers": 0 if lot.pay_station.api is None else lot.pay_station.api.answers,
                "events": await outbox(lot.gateway),
                "lanes": {k: v.status() for k, v in lot.gateway.lanes.items()},
                "inside": lot.world.inside,
            }

    with asyncio.Runner(loop_factory=lambda: TimeWarpLoop(None, io_grace_s=0.0)) as runner:
        return runner.run(main())


@pytest.mark.slow  # the real daemon on a simulated hour
def test_ticket_cars_take_a_ticket_pay_by_it_and_leave_through_the_scanner() -> None:
    day = ticket_hour(0.5)
    took = [e for e in day["truth"] if e.kind == "ticket"]
    assert len(took) >= 5
    assert all(e.lane == "entry-a" for e in took)  # only the lane with a printer
    assert day["printed"] == [e.ticket for e in took]  # each ticket went to its driver
    came_in = [e for e in day["truth"] if e.kind == "entered" and e.ticket]
    left = [e for e in day["truth"] if e.kind == "exited" and e.ticket]
    assert {e.ticket for e in left} == {e.ticket for e in came_in}  # everyone left again
    assert day["inside"] == 0
    started = {d["sessionId"]: d for t, d in day["events"] if t == "session.started"}
    ended = Counter(d["sessionId"] for t, d in day["events"] if t == "session.ended")
    paid = Counter(d["sessionId"] for t, d in day["events"] if t == "payment.recorded")
    for e in came_in:
        session_id = day["sessions"][e.ticket]
        assert "identifiedVehicle" not in started[session_id]  # no plate: the ticket is all
        assert {"type": "ticket", "identifier": session_id} in (
            started[session_id]["identifiedCredentials"])
        assert ended[session_id] == 1
        assert paid[session_id] >= 1
        assert e.ticket in day["scanned"]
    assert day["by_ticket"] >= len(came_in)
    # The pay station paid through the HTTP API (e2e-lot.toml serves it): a lookup and a
    # payment for each ticket at least.
    assert day["api_answers"] >= 2 * len(came_in)
    exit_tickets = day["lanes"]["exit"]["tickets"]
    assert exit_tickets == {"invalid": 0, "refused": 0}
    assert day["lanes"]["entry-a"]["tickets"] == {"issued": len(took), "printer": "ok"}
    # The plates read at either entry were never asked for a ticket.
    plates = [e for e in day["truth"] if e.kind == "entered" and not e.ticket]
    assert plates


async def test_an_unreadable_plate_reads_as_nothing() -> None:
    camera = SimCamera("entry-a", clock=FakeClock(), render=False)
    reader = GroundTruthReader()
    camera.show(Shown("AB123CD", "AB-123-CD", "eu", readable=False))
    dirty = camera.latest()
    assert dirty is not None
    assert dirty.truth == "AB123CD"  # the truth stays, for checking
    assert reader.read(dirty) is None
    assert (await reader.read_frames([dirty])).plate is None
    camera.show(Shown("AB123CD", "AB-123-CD", "eu"))
    clean = await camera.next_frame(1.0)
    assert clean is not None
    assert (await reader.read_frames([clean])).plate == "AB123CD"
