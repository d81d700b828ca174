"""How far a ramp count drifts in a day, with and without the quiet-hour correction.

A level counted at its ramp, with vehicles going up and coming down through a simulated day
(`parking_sim.ramps`: back-outs, long vehicles, chatter, vehicles bumper to bumper), through
the gateway's own parts: gpiozero loops on the simulator's pins, the ramp's direction logic
and the counting controller (with an in-memory journal). The level's bay sensors are taken as
right, so the correction at `correct_at` sets the count to the truth of that moment.

    python -m parking_sim.ramp_bench [--seed 11] [--hours 24]

prints the count error (count - truth) at the end of the day, without and with the
correction, over several seeds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.config import LevelConfig
from gateway.controllers.counting import Counting
from gateway.drivers.gpio import VehicleLoop
from gateway.runtime.log import configure_logging
from parking_sim import vtime
from parking_sim.gpio import SimPins
from parking_sim.ramps import RampBehaviour, RampSim

START = datetime.fromisoformat("2026-03-02T06:00:00+01:00")  # as the e2e day
TZ = START.tzinfo
# Vehicles per hour going up to the level, from 06:00 (the e2e day's shape, a level's share).
RATE = [4, 14, 18, 14, 10, 9, 10, 9, 9, 10, 12, 11, 8, 6, 4, 3, 2, 1, 0, 0, 0, 0, 0, 1]
PLATOON = 0.2  # share of arrivals with a second vehicle right behind


class _MemoryJournal:
    """What the counting controller journals, kept in memory: the bench measures counts."""

    def __init__(self) -> None:
        self.alarms: list[str] = []

    async def commit(self, changes: Any = (), events: Any = ()) -> list[int]:
        return []

    async def raise_alarm(self, alarm: Any) -> None:
        self.alarms.append(alarm.alarm_id)

    async def clear_alarm(self, alarm_id: str, message: str = "cleared") -> None:
        return None


@dataclass(frozen=True, slots=True)
class DayResult:
    seed: int
    correct_at: str | None
    vehicles: int  # went up
    truth: int  # on the level at the end
    count: int
    close_follows: int
    back_outs: int

    @property
    def error(self) -> int:
        return self.count - self.truth


def run_day(seed: int, *, correct_at: str | None, hours: float = 24.0,
            capacity: int = 120, behaviour: RampBehaviour | None = None) -> DayResult:
    """One simulated day of the level, in virtual time."""

    async def main(clock: vtime.VirtualClock) -> DayResult:
        rng = random.Random(seed)
        pins = SimPins()
        level = LevelConfig.model_validate({
            "id": "3", "capacity": capacity, "correct_at": correct_at,
            "ramps": [{"id": "r-2-3", "loop_a": 20, "loop_b": 21, "from": "2"}]})
        ramp = RampSim("r-2-3", pins.input(20), pins.input(21), rng=random.Random(seed + 1),
                       behaviour=behaviour)
        truth = {"on": 0}
        counting = Counting([level], _MemoryJournal(), clock, tz=TZ,  # type: ignore[arg-type]
                            sensed=lambda _level: truth["on"])
        loops = [VehicleLoop(f"r.{n}", pin, debounce_ms=0, factory=pins.factory)
                 for n, pin in (("a", 20), ("b", 21))]
        counting.attach("r-2-3", *loops)
        runner = asyncio.ensure_future(counting.run())
        went_up = 0

        def crossed(up: bool) -> None:
            truth["on"] += 1 if up else -1

        ramp.on_crossed = crossed
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        arrivals: list[float] = []
        for hour in range(int(hours)):
            rate = RATE[hour % 24]
            t = hour * 3600.0
            while rate and (t := t + rng.expovariate(rate / 3600.0)) < (hour + 1) * 3600.0:
                arrivals.append(t)
                if rng.random() < PLATOON:  # cars through the entry together drive up together
                    arrivals.append(t + rng.uniform(0.5, 2.0))
        for at in sorted(arrivals):
            await asyncio.sleep(max(0.0, t0 + at - loop.time()))
            if truth["on"] + ramp.waiting >= capacity:
                continue  # full: it parks elsewhere
            went_up += 1
            ramp.cross(True)
            stay = rng.lognormvariate(8.6, 0.8)  # a median of about 1.5 h
            if at + stay < hours * 3600.0:
                loop.call_later(stay, ramp.cross, False)
        await asyncio.sleep(max(0.0, t0 + hours * 3600.0 - loop.time()))
        while ramp.busy:  # noqa: ASYNC110 (the last vehicles finishing, in virtual time)
            await asyncio.sleep(5.0)
        await asyncio.sleep(5.0)
        await counting.check_corrections()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await ramp.close()
        counting.close()
        for vloop in loops:
            vloop.close()
        return DayResult(seed, correct_at, went_up, truth["on"], counting.counts()["3"],
                         ramp.close_follows, ramp.back_outs)

    return vtime.run(main, start=START, io_grace_s=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--seeds", type=int, default=5, help="days to run, from --seed on")
    parser.add_argument("--hours", type=float, default=24.0)
    args = parser.parse_args()
    configure_logging("warning", stream=sys.stderr)  # the figures on stdout, not each crossing
    for seed in range(args.seed, args.seed + args.seeds):
        plain = run_day(seed, correct_at=None, hours=args.hours)
        fixed = run_day(seed, correct_at="03:30", hours=args.hours)
        print(f"seed {seed}: {plain.vehicles} vehicles up, {plain.close_follows} bumper to"
              f" bumper, {plain.back_outs} backed out; end of day truth {plain.truth}:"
              f" error without correction {plain.error:+d}, with the 03:30 correction"
              f" {fixed.error:+d}")


if __name__ == "__main__":
    main()
