"""The end-to-end lot's signs in the simulator: the real daemon drives the simulated ASCII signs
on their pty, in virtual time, and the entrance sign shows the lot's free count (the level
sign its floor's) as cars come and go."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from parking_sim.daemon import lot_run, sim_settings
from parking_sim.demo import signs_shown
from parking_sim.scenario import load_scenario
from parking_sim.vtime import TimeWarpLoop, VirtualClock

from gateway.core.signs import display

pytestmark = pytest.mark.slow  # runs the simulated lot with the real daemon

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "hardware-sim" / "scenarios" / "e2e-day.toml"


def test_the_entrance_sign_shows_the_lots_free_count_as_cars_come_and_go() -> None:
    scenario = load_scenario(SCENARIO)
    settings = sim_settings(scenario.settings(), Path(tempfile.mkdtemp(prefix="signs-")))

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        clock = VirtualClock(loop, start=scenario.scenario.start)
        seen: dict[str, Any] = {"entrance": set(), "checks": 0}
        async with lot_run(settings, scenario, clock=clock, control=False,
                           render_frames=False, node_sample_period_s=0.5) as run:
            line = run.signs["/dev/ttyUSB1"]
            for _ in range(8):  # two lot hours, looked at every quarter of an hour
                await run.world.run(15 * 60)
                await asyncio.sleep(1.0)  # the last change's feed window and frame
                current = run.gateway.availability.current
                assert current is not None
                doc = current.document()
                lot = display("auto", free=doc["lot"]["free"], lot_state=doc["lotState"])
                floor = display("auto", free=doc["floors"]["1"]["free"])
                assert lot is not None
                assert floor is not None
                assert (line.text(1), line.text(2)) == (lot.text, floor.text)
                seen["entrance"].add(line.text(1))
                seen["checks"] += 1
            seen["frames"] = line.frames
            seen["demo"] = signs_shown(run).plain  # the demo's live view shows the signs
            seen["shown"] = (line.text(1), line.text(2))
            seen["board"] = run.gateway.sign_board.summary()  # type: ignore[union-attr]
        return seen

    with asyncio.Runner(loop_factory=lambda: TimeWarpLoop(None, io_grace_s=0.0)) as runner:
        seen = runner.run(main())
    assert seen["checks"] == 8
    assert len(seen["entrance"]) >= 2  # the count moved with the traffic (the night's few cars)
    assert all(row["answering"] and row["counters"]["timeouts"] == 0 for row in seen["board"])
    entrance, level = seen["shown"]
    assert f"entrance (lot) [{entrance:^6}]" in seen["demo"]
    assert f"level-1 (floor:1) [{level:^6}]" in seen["demo"]
    assert len(seen["demo"]) <= 100
