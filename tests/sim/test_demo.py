"""`parking-gateway demo` across restarts, with environment overrides and a late broker.

Issue 15, item 6: each start replayed the day from 07:30 with an empty lot while the journal
kept its sessions (285 open against 1 vehicle inside after 30 restarts); the demo ignored
``PARKING_GATEWAY__...`` overrides, and decided once at start whether to sync.
"""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from parking_sim.demo import DEMO_SCENARIO, demo_settings, run_demo
from parking_sim.scenario import load_scenario
from parking_sim.state import Journaled, reconcile
from parking_sim.traffic import Arrival, Traffic, TrafficModel, Vehicle
from parking_sim.vtime import TimeWarpLoop
from parking_sim.world import Placed, SavedWorld
from rich.console import Console

from tests.sync.mosquitto import HAVE_MOSQUITTO, Mosquitto, free_port

pytestmark = pytest.mark.slow  # runs the demo's lot with the real daemon


def demo(state_dir: Path, seconds: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    with asyncio.Runner(loop_factory=lambda: TimeWarpLoop(None, io_grace_s=0.0)) as runner:
        return runner.run(run_demo(seconds, 300.0, None, False, state_dir,
                                   Console(quiet=True), env=env or {}))


def test_a_restarted_demo_resumes_the_lot_where_it_stopped(tmp_path: Path) -> None:
    first = demo(tmp_path, 8)
    second = demo(tmp_path, 8)
    assert first["sessions"]["open"] > 10  # the morning rush has filled the lot a little
    # The lot's clock goes on from where it stopped, and its vehicles are still inside.
    stopped = datetime.fromisoformat(first["lot_time"])
    assert datetime.fromisoformat(second["lot_time"]) > stopped + timedelta(minutes=5)
    assert second["start"] == 2
    assert second["vehicles"]["entered"] > first["vehicles"]["entered"]  # counted on
    for run in (first, second):
        sessions = run["sessions"]
        assert abs(sessions["open"] - sessions["inside_truth"]) <= 3, run  # cars mid-lane
    assert second["sessions"]["inside_truth"] >= first["sessions"]["inside_truth"] - 10
    # Where a technician's commands reach it, and its money with the currency (issue 20).
    assert first["control_socket"] == str(tmp_path / "control.sock")
    assert (first["currency"], type(first["payments_minor"])) == ("EUR", int)


def test_traffic_resumed_from_its_position_draws_the_same_arrivals() -> None:
    model = TrafficModel(rate_per_hour=[0.0] * 6 + [60.0] * 12 + [0.0] * 6, tailgate_prob=0.2)

    def key(a: Arrival) -> tuple[float, str, float, bool]:
        return (a.at_s, a.vehicle.plate, a.stay_s, a.tailgates)

    whole = [key(a) for a in Traffic(model, seed=3).arrivals(86400)]
    first = Traffic(model, seed=3)
    arrivals = first.arrivals(86400)
    came = [key(next(arrivals)) for _ in range(100)]  # the 100th drawn, not yet arrived
    again = Traffic(model, seed=3)
    again.resume(json.loads(json.dumps(first.position())))  # through the state file's JSON
    assert came[:99] + [key(a) for a in again.arrivals(86400)] == whole
    skipping = Traffic(model, seed=3)
    skipped = skipping.skip(40_000)
    assert [key(a) for a in skipped] + [key(a) for a in skipping.arrivals(86400)] == whole


def placed(plate: str, phase: Any, bay: str | None = None) -> Placed:
    vehicle = Vehicle(plate, plate, "eu", "visitor")
    return Placed(Arrival(0.0, vehicle, 3600.0, False, False, 4.5, 2.0), phase, bay, 60.0)


def test_after_a_hard_kill_the_lot_follows_the_journal() -> None:
    saved = SavedWorld(600.0, (placed("LEFT1", "parked", "A-1"), placed("STAYS1", "parked",
                                                                        "A-2"),
                               placed("QUEUED1", "arriving"), placed("PASSED1", "arriving")),
                       {}, {})
    journal = Journaled(datetime(2026, 3, 2, 8, 0), {"STAYS1": "visitor", "PASSED1": "visitor",
                                                     "CAMEIN1": "permit"})
    came_in = Arrival(700.0, Vehicle("CAMEIN1", "CA-MEIN-1", "eu", "permit"), 999.0,
                      False, False, 4.0, 2.0)
    world = reconcile(saved, journal, behind=True, skipped=[came_in], known=[], stay_s=60.0)
    where = {p.arrival.vehicle.plate: p.phase for p in world.vehicles}
    # LEFT1's session closed after the save: it left. CAMEIN1 came in after it, as drawn.
    assert where == {"STAYS1": "parked", "QUEUED1": "arriving", "PASSED1": "to_bay",
                     "CAMEIN1": "to_bay"}
    assert next(p for p in world.vehicles if p.arrival.vehicle.plate == "CAMEIN1"
                ).arrival is came_in
    # After a clean stop the saved world stands; only a car crossing an entry is settled.
    clean = reconcile(saved, journal, behind=False, skipped=[], known=[], stay_s=60.0)
    assert {p.arrival.vehicle.plate: p.phase for p in clean.vehicles} == {
        "LEFT1": "parked", "STAYS1": "parked", "QUEUED1": "arriving", "PASSED1": "to_bay"}


def test_the_demo_takes_environment_overrides_as_run_does(tmp_path: Path) -> None:
    env = {"PARKING_GATEWAY__SYNC__MQTT__HOST": "broker.example",
           "PARKING_GATEWAY__SYNC__MQTT__PORT": "18883"}
    settings = demo_settings(load_scenario(DEMO_SCENARIO), tmp_path, lpr=False, env=env)
    assert (settings.sync.mqtt.host, settings.sync.mqtt.port) == ("broker.example", 18883)
    assert settings.journal.path == tmp_path / "journal.db"  # the state dir still holds it


@pytest.mark.skipif(not HAVE_MOSQUITTO, reason="mosquitto is not installed")
def test_a_broker_that_comes_up_after_the_demo_started_gets_the_events(tmp_path: Path) -> None:
    port = free_port()
    broker = Mosquitto(tmp_path / "broker", port=port)
    late = threading.Timer(2.0, broker.start)  # real seconds: the demo is running by then
    late.start()
    try:
        summary = demo(tmp_path / "state", 8, env={
            "PARKING_GATEWAY__SYNC__MQTT__HOST": "127.0.0.1",
            "PARKING_GATEWAY__SYNC__MQTT__PORT": str(port)})
    finally:
        late.cancel()
        broker.stop()
    assert summary["backend"] == f"MQTT 127.0.0.1:{port}, connected"
    assert summary["events_unsynced"] < summary["events_journaled"] / 2
