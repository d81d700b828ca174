"""The hardware simulator: traffic, lane physics against the real drivers, cameras, a short run."""

from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from parking_sim import vtime
from parking_sim.camera import GroundTruthReader, PhotoLibrary, PlateScene, Shown, SimCamera
from parking_sim.gatekeeper import GateKeeper
from parking_sim.run import plot, simulate
from parking_sim.scenario import Scenario, ScenarioError, load_scenario
from parking_sim.traffic import PLATE_MASKS, Arrival, Traffic, TrafficModel, Vehicle
from parking_sim.world import World

from gateway.cli import cli
from gateway.config import load_settings
from gateway.drivers.gpio import LaneIo
from gateway.lpr.worker import PlateResult
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.slow  # runs the simulated lot

SCENARIOS = Path(__file__).resolve().parents[2] / "hardware-sim" / "scenarios"
RATES = [0.0] * 6 + [30.0] * 12 + [0.0] * 6


def model(**overrides: Any) -> TrafficModel:
    values: dict[str, Any] = {"rate_per_hour": RATES, "formats": {"eu": 1, "uk": 1, "br": 1}}
    values.update(overrides)
    return TrafficModel(**values)


# --- traffic --------------------------------------------------------------------------------


def test_traffic_is_deterministic_by_seed() -> None:
    def plates(seed: int) -> list[tuple[float, str, float]]:
        return [(a.at_s, a.vehicle.plate, a.stay_s)
                for a in Traffic(model(), seed=seed).arrivals(86400)]

    assert plates(5) == plates(5)
    assert plates(5) != plates(6)


def test_traffic_follows_the_hourly_rate_and_clips_stays() -> None:
    arrivals = list(Traffic(model(stay_min_min=30, stay_max_min=90, tailgate_prob=0.2),
                            seed=1).arrivals(86400))
    hours = {int(a.at_s // 3600) for a in arrivals}
    assert hours <= set(range(6, 18))  # no arrivals where the rate is 0
    assert 300 < len(arrivals) < 500  # 12 h at 30 an hour, plus tailgaters
    assert all(30 * 60 <= a.stay_s <= 90 * 60 for a in arrivals)
    assert {a.vehicle.kind for a in arrivals} == {"permit", "reservation", "visitor", "denied"}
    assert all(3.5 <= a.length_m <= 5.5 and 1.0 <= a.speed_mps <= 4.0 for a in arrivals)
    tailgaters = [a for a in arrivals if a.tailgates]
    assert tailgaters
    assert len(tailgaters) < len(arrivals) / 3


def test_plates_follow_their_country_format() -> None:
    traffic = Traffic(model(formats=dict.fromkeys(PLATE_MASKS, 1.0), permit_pool=200), seed=2)
    seen = {v.fmt: v for v in traffic.permits}
    assert set(seen) == set(PLATE_MASKS)
    assert re.fullmatch(r"[A-Z]{2}-\d{3}-[A-Z]{2}", seen["eu"].printed)
    assert re.fullmatch(r"[A-Z]{2}\d{2} [A-Z]{3}", seen["uk"].printed)
    assert re.fullmatch(r"[A-Z]{3}\d[A-Z]\d{2}", seen["br"].printed)  # Mercosul
    assert re.fullmatch(r"\d[A-Z]{3}\d{3}", seen["us"].printed)
    assert seen["eu"].plate == seen["eu"].printed.replace("-", "")


def test_traffic_rejects_a_bad_model() -> None:
    with pytest.raises(ValueError, match="24 values"):
        TrafficModel(rate_per_hour=[1.0] * 23)
    with pytest.raises(ValueError, match="plate formats"):
        model(formats={"xx": 1.0})


# --- scenarios ------------------------------------------------------------------------------


def test_shipped_scenarios_load() -> None:
    paths = [p for p in SCENARIOS.glob("*.toml")
             if "scenario" in tomllib.loads(p.read_text())]  # not the lot configs beside them
    assert len(paths) >= 3
    for path in paths:
        scenario = load_scenario(path)
        settings = scenario.settings()
        assert settings.lanes
        assert settings.bays


def test_a_typo_in_a_scenario_names_its_place(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    text = (SCENARIOS / "weekday.toml").read_text().replace("tailgate_prob", "tailgate_prb")
    path.write_text(text)
    with pytest.raises(ScenarioError, match=r"driving\.tailgate_prb"):
        load_scenario(path)


def small_scenario(**lot: Any) -> Scenario:
    data: dict[str, Any] = {
        "scenario": {"name": "test", "hours": 1, "seed": 3, "sample_s": 30},
        "lot": {"bays": 6, "ultrasonic_bays": 1, **lot},
        "traffic": {"rate_per_hour": [40.0] * 24, "stay_mean_min": 20, "stay_sd_min": 10},
        "population": {"denied": 0.2, "formats": {"eu": 1.0, "br": 1.0}},
        "driving": {"tailgate_prob": 0.3, "reverse_prob": 0.1, "to_bay_s": [5, 10],
                    "patience_s": [10, 20]},
        "sensors": {"loop_chatter": 0.5},
    }
    return Scenario.model_validate(data)


# --- lanes against the real drivers -------------------------------------------------------


def vehicle(plate: str, kind: str = "visitor") -> Vehicle:
    return Vehicle(plate, plate, "eu", kind)  # type: ignore[arg-type]


def arrival(plate: str, *, tailgates: bool = False, reverses: bool = False,
            kind: str = "visitor") -> Arrival:
    return Arrival(0.0, vehicle(plate, kind), 600.0, tailgates, reverses, 4.5, 2.0)


Drive = Callable[[World, dict[str, GateKeeper]], Any]


def run_lane(cars: Drive, *, policy: Callable[[str, str | None], bool] | None = None,
             **lot: Any) -> tuple[World, dict[str, GateKeeper], dict[str, LaneIo]]:
    """A one-entry lot with a gate keeper on the gateway's drivers; ``cars`` adds the cars."""
    scenario = small_scenario(exits=0, **lot)

    async def main(clock: vtime.VirtualClock) -> tuple[World, dict[str, GateKeeper],
                                                       dict[str, LaneIo]]:
        world = World(scenario.settings(), scenario, clock=clock)
        ios, keepers = {}, {}
        for lane in world.settings.lanes:
            io = LaneIo.build(lane.id, lane.gpio, lane.barrier, factory=world.factory,
                              debounce_ms=80)
            ios[lane.id] = io
            keepers[lane.id] = GateKeeper(lane, io, world.cameras[lane.id],
                                          policy or (lambda direction, plate: True),
                                          pass_timeout_s=20)
        await world.start()
        for keeper in keepers.values():
            keeper.start()
        try:
            await cars(world, keepers)
        finally:
            for keeper in keepers.values():
                await keeper.close()
            for io in ios.values():
                await io.close()
            await world.close()
            world.factory.reset()
        return world, keepers, ios

    return vtime.run(main, io_grace_s=0.0)


def unsafe(world: World) -> list[Any]:
    return [e for e in world.safety_events() if e.kind == "commanded_down_onto_vehicle"]


def test_a_car_passes_and_the_loops_are_debounced_through_chatter() -> None:
    async def drive(world: World, keepers: dict[str, GateKeeper]) -> None:
        lane = world.lanes["entry-1"]
        for plate in ("AB123CD", "EF456GH", "JK789LM"):
            lane.add_car(arrival(plate), patience_s=60)
            await asyncio.sleep(40)

    world, keepers, ios = run_lane(drive)
    entered = world.truth.of("entered")
    assert [e.plate for e in entered] == ["AB123CD", "EF456GH", "JK789LM"]
    assert keepers["entry-1"].stats.admitted == 3
    arming = ios["entry-1"].arming
    assert arming.changes == 6  # on and off once per car, whatever the chatter
    assert arming.chatter + ios["entry-1"].safety.chatter > 0  # there was chatter to ignore
    assert unsafe(world) == []


def test_a_tailgater_slips_through_behind_the_car_ahead() -> None:
    async def drive(world: World, keepers: dict[str, GateKeeper]) -> None:
        lane = world.lanes["entry-1"]
        lane.add_car(arrival("AB123CD"), patience_s=60)
        lane.add_car(arrival("XY999ZZ", tailgates=True), patience_s=60)
        await asyncio.sleep(60)

    world, keepers, _ = run_lane(drive)
    entered = world.truth.of("entered")
    assert [(e.plate, e.tailgate) for e in entered] == [("AB123CD", False), ("XY999ZZ", True)]
    assert keepers["entry-1"].stats.admitted == 1  # the loops saw one long vehicle
    assert unsafe(world) == []
    assert world.lanes["entry-1"].arm.position == "down"


def test_a_refused_car_backs_out_and_the_barrier_stays_down() -> None:
    async def drive(world: World, keepers: dict[str, GateKeeper]) -> None:
        world.lanes["entry-1"].add_car(arrival("DE666NY", kind="denied"), patience_s=15)
        await asyncio.sleep(60)

    world, keepers, ios = run_lane(drive, policy=lambda direction, plate: plate != "DE666NY")
    assert [e.kind for e in world.truth.events if e.kind in ("refused", "entered")] == ["refused"]
    assert keepers["entry-1"].stats.refused == 1
    assert [c.action for c in ios["entry-1"].barrier.commands] == []


def test_a_car_that_changes_its_mind_under_an_open_barrier() -> None:
    async def drive(world: World, keepers: dict[str, GateKeeper]) -> None:
        lane = world.lanes["entry-1"]
        lane.add_car(arrival("AB123CD", reverses=True), patience_s=60)
        await asyncio.sleep(20)
        lane.add_car(arrival("EF456GH"), patience_s=60)
        await asyncio.sleep(60)

    world, _keepers, ios = run_lane(drive)
    kinds = [(e.kind, e.plate) for e in world.truth.events if e.kind in ("reversed", "entered")]
    assert kinds == [("reversed", "AB123CD"), ("entered", "EF456GH")]
    actions = [c.action for c in ios["entry-1"].barrier.commands]
    assert actions == ["raise", "lower", "raise", "lower"]  # closed after the pass timeout
    assert unsafe(world) == []


def test_world_builds_from_the_example_config() -> None:
    settings = load_settings(EXAMPLE, env={})
    scenario = small_scenario()

    async def main(clock: vtime.VirtualClock) -> World:
        world = World(settings, scenario, clock=clock)
        await world.close()
        world.factory.reset()
        return world

    world = vtime.run(main)
    assert set(world.lanes) == {lane.id for lane in settings.lanes}
    assert set(world.ultrasonic) == {"A-01", "A-02"}
    assert world.modbus_units["A-03"] == 1
    assert world.lanes["entry-south"].pins.drive == "level"


# --- cameras --------------------------------------------------------------------------------


def test_sim_camera_renders_the_car_in_view() -> None:
    async def main(clock: vtime.VirtualClock) -> None:
        camera = SimCamera("entry-1", clock=clock, fps=10)
        empty = await camera.next_frame(1.0)
        assert empty is not None
        assert empty.truth is None
        camera.show(Shown("AB123CD", "AB-123-CD", "eu"))
        frame = await camera.next_frame(1.0)
        assert frame is not None
        assert frame.truth == "AB123CD"
        assert frame.image.shape == (360, 640, 3)
        assert frame.image.dtype == np.uint8
        x, y, w, h = frame.meta["plate_box"]
        assert 0 <= x < x + w <= 640
        assert 0 <= y < y + h <= 360
        assert w > 3 * h > 0
        later = await camera.next_frame(1.0)
        assert later is not None
        assert later.sequence > frame.sequence
        assert camera.latest() is later
        camera.failed = True
        assert camera.latest() is None
        assert await camera.next_frame(0.5) is None

    vtime.run(main)


def test_rendered_plates_vary_in_angle_blur_and_light() -> None:
    scene = PlateScene(seed=4)
    frames = [scene.render("BRA2E19", "br")[0] for _ in range(6)]
    means = [float(f.mean()) for f in frames]
    assert max(means) - min(means) > 10  # lighting differs from frame to frame
    sharpness = [cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
                 for f in frames]
    assert max(sharpness) > 1.3 * min(sharpness)


def test_photo_library_replays_labelled_photos(tmp_path: Path) -> None:
    (tmp_path / "eu").mkdir()
    cv2.imwrite(str(tmp_path / "eu" / "car1.jpg"), np.full((40, 80, 3), 128, np.uint8))
    (tmp_path / "eu" / "car1.txt").write_text("car1.jpg\t10\t12\t40\t10\tM5XSX\n")
    (tmp_path / "eu" / "broken.txt").write_text("only two\tfields\n")
    library = PhotoLibrary(tmp_path)
    assert library.plates() == ["M5XSX"]
    assert library.skipped == 1

    async def main(clock: vtime.VirtualClock) -> None:
        camera = SimCamera("entry-1", clock=clock, photos=library)
        camera.show(Shown("M5XSX", "M5XSX", "photo"))
        frame = await camera.next_frame(1.0)
        assert frame is not None
        assert frame.truth == "M5XSX"
        assert frame.meta["plate_box"] == (10, 12, 40, 10)
        assert frame.image.shape == (40, 80, 3)

    vtime.run(main)
    traffic = Traffic(model(), seed=1, plate_pool=library.plates())
    assert {v.plate for v in traffic.permits} == {"M5XSX"}


async def test_ground_truth_reader_is_a_plate_source(clock: Any) -> None:
    camera = SimCamera("entry-1", clock=clock)
    camera.show(Shown("AB123CD", "AB-123-CD", "eu"))
    frames = [f for f in [await camera.next_frame(1.0) for _ in range(2)] if f is not None]
    reader = GroundTruthReader()
    result = await reader.read_frames(frames)
    assert isinstance(result, PlateResult)
    assert (result.plate, result.confidence, result.frames_agreeing) == ("AB123CD", 1.0, 2)
    camera.show(None)
    empty = await camera.next_frame(1.0)
    assert empty is not None
    assert (await reader.read_frames([empty])).reason == "no_read"
    assert (await reader.read_frames([])).reason == "no_frames"


# --- a whole run ----------------------------------------------------------------------------


def test_a_short_run_keeps_the_barrier_off_cars_and_draws_a_png(tmp_path: Path) -> None:
    scenario = small_scenario()
    result = vtime.run(lambda clock: simulate(scenario, clock=clock, hours=0.5,
                                              report_every_s=600),
                       start=scenario.scenario.start, io_grace_s=0.0)
    truth = result.truth
    assert truth["arrived"] >= 12
    assert truth["entered"] + truth.get("refused", 0) + truth.get("reversed", 0) >= 10
    assert truth["entered"] <= truth["arrived"]
    assert "commanded_down_onto_vehicle" not in result.safety
    assert max(s.occupied for s in result.samples) <= result.capacity
    assert result.keepers["entry-1"].refused > 0  # deny-listed plates, a full lot
    path = plot(result, tmp_path / "run.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cv2.imread(str(path)).shape[1] > 1000


def test_sim_run_command(tmp_path: Path) -> None:
    out = tmp_path / "plots" / "day.png"  # a new folder: made, and said so, as `report -o` does
    runner = CliRunner()
    result = runner.invoke(cli, ["sim", "run", str(SCENARIOS / "weekday.toml"), "--hours", "0.5",
                                 "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"plot: {out.resolve()}" in result.output
    assert out.is_file()
    assert result.stderr == f"created the folder {out.parent}\n"
    bad = runner.invoke(cli, ["sim", "run", str(SCENARIOS / "weekday.toml"),
                              "--time-scale", "fast"])
    assert bad.exit_code == 2
    assert "virtual" in bad.output
    not_png = runner.invoke(cli, ["sim", "run", str(SCENARIOS / "weekday.toml"),
                                  "--out", str(tmp_path / "day.txt")])
    assert not_png.exit_code == 2
    assert "PNG" in not_png.output


def test_level_driven_lane_lets_cars_through() -> None:
    async def drive(world: World, keepers: dict[str, GateKeeper]) -> None:
        lane = world.lanes["entry-1"]
        assert lane.pins.drive == "level"
        lane.add_car(arrival("AB123CD"), patience_s=60)
        lane.add_car(arrival("EF456GH"), patience_s=60)
        await asyncio.sleep(60)

    world, _, _ = run_lane(drive, drive="level")
    assert [e.plate for e in world.truth.of("entered")] == ["AB123CD", "EF456GH"]
    assert unsafe(world) == []
    assert world.lanes["entry-1"].arm.position == "down"


@pytest.mark.parametrize("controller_safety", [True, False])
def test_lowering_onto_a_car_is_recorded(controller_safety: bool) -> None:
    """The check an end-to-end test relies on: a lane that lowers onto a car is caught."""
    scenario = small_scenario(exits=0)
    scenario = scenario.model_copy(update={"barrier": scenario.barrier.model_copy(
        update={"controller_safety": controller_safety})})

    async def main(clock: vtime.VirtualClock) -> World:
        world = World(scenario.settings(), scenario, clock=clock)
        lane_config = world.settings.lanes[0]
        io = LaneIo.build(lane_config.id, lane_config.gpio, lane_config.barrier,
                          factory=world.factory)
        io.barrier.set_lower_guard(None)  # a careless lane: no guard
        await world.start()
        lane = world.lanes["entry-1"]
        car = lane.add_car(arrival("AB123CD"), patience_s=600)
        for _ in range(600):
            if car.at_line_since is not None:
                break
            await asyncio.sleep(0.1)
        await io.barrier.raise_()
        for _ in range(600):  # roll the car under the open arm, then stop it there
            if car.front >= -0.5:
                break
            await asyncio.sleep(0.1)
        car.arrival = Arrival(0.0, car.arrival.vehicle, 600.0, False, False, 4.5, 0.0)
        await io.barrier.lower()
        await asyncio.sleep(5)
        await io.close()
        await world.close()
        world.factory.reset()
        return world

    world = vtime.run(main, io_grace_s=0.0)
    kinds = [e.kind for e in world.safety_events()]
    assert kinds[0] == "commanded_down_onto_vehicle"
    assert world.safety_events()[0].plate == "AB123CD"
    if controller_safety:
        assert world.lanes["entry-1"].arm.position == "up"  # the controller would not close
    else:
        assert "arm_hit_vehicle" in kinds
