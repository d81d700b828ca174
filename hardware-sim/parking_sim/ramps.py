"""The ramps of levels counted at their ramps: vehicles driving over a pair of loops.

A :class:`RampSim` drives the two loop inputs of one ramp (``[[levels.ramps]]``) as vehicles
cross it: A then B going up into the level, B then A coming back down. The loops are laid as
docs/operations.md says: A and B each 2 m long with 0.5 m between them, so a car covers both
for a moment. Each vehicle's edges come from its length and speed; the ramp takes one vehicle
at a time, in order, like a one-lane ramp.

What makes a count wrong, as on a real ramp, is here too:

* a vehicle that starts up the ramp and reverses back down (to A only, or as far as B);
* long vehicles (vans with a trailer) covering both loops at once;
* chatter: a loop's output bouncing for a few milliseconds;
* a vehicle following bumper to bumper, less than the gap between the loops behind the one
  ahead: the loops never clear between them, and the direction logic sees one long vehicle
  (the one error it cannot see; the level's quiet-hour correction or a recount takes it out).

``truth`` is the net number of vehicles that really went in.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from parking_sim.gpio import SimInputPin

LOOP_A = (0.0, 2.0)  # metres along the ramp, going up
LOOP_B = (2.5, 4.5)
START_M = -1.0  # where a vehicle's front starts, before loop A
DT_S = 0.05
APPROACH_S = 2.0  # from joining the ramp's queue to its front at loop A


@dataclass(frozen=True, slots=True)
class RampBehaviour:
    """How vehicles behave at a ramp (probabilities per crossing)."""

    back_out: float = 0.03  # starts up and reverses back down before crossing
    long_vehicle: float = 0.03  # 9 to 14 m
    chatter: float = 0.05  # a loop bounces for a few ms during the crossing
    close_follow: float = 0.25  # a vehicle waiting behind goes right behind the one ahead
    speed_mps: tuple[float, float] = (1.5, 4.0)
    length_m: tuple[float, float] = (3.5, 5.5)


class RampSim:
    """One ramp's loops, driven by the vehicles crossing it."""

    def __init__(self, ramp_id: str, loop_a: SimInputPin, loop_b: SimInputPin, *,
                 rng: random.Random, behaviour: RampBehaviour | None = None) -> None:
        self.ramp_id = ramp_id
        self._pins = (loop_a, loop_b)
        self._rng = rng
        self.behaviour = behaviour or RampBehaviour()
        self._queue: deque[bool] = deque()  # vehicles waiting, True: going up (in)
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.truth = 0  # vehicles that went up, less those that came down
        self.crossings = 0
        self.close_follows = 0  # pairs the loops saw as one vehicle
        self.back_outs = 0
        self.on_crossed: Callable[[bool], None] | None = None

    def cross(self, up: bool) -> None:
        """A vehicle arrives at the ramp going up (into the level) or down."""
        self._queue.append(up)
        self._arrived.set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> bool:
        return bool(self._queue) or any(pin.level for pin in self._pins)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            up = self._queue.popleft()
            b = self.behaviour
            await asyncio.sleep(APPROACH_S)  # it drives up to loop A; a platoon closes up
            lengths = [self._length()]
            if self._queue and self._rng.random() < b.close_follow and self._queue[0] == up:
                self._queue.popleft()
                lengths.append(self._length())
                self.close_follows += 1
            if self._rng.random() < b.back_out:
                self.back_outs += 1
                stop = self._rng.uniform(0.5, LOOP_B[0] + 1.0)  # reaches A, maybe B
                await self._drive(up, lengths[0], stop_m=stop)
                await asyncio.sleep(self._rng.uniform(2.0, 6.0))
            # Two close vehicles drive as one long one: the second's front 0.1 to 0.4 m
            # behind the first's rear, under the 0.5 m between the loops.
            length = sum(lengths) + 0.25 * (len(lengths) - 1)
            await self._drive(up, length)
            for _ in lengths:
                self.truth += 1 if up else -1
                self.crossings += 1
                if self.on_crossed is not None:
                    self.on_crossed(up)
            await asyncio.sleep(self._rng.uniform(0.8, 3.0))  # the next one pulls up

    def _length(self) -> float:
        b = self.behaviour
        if self._rng.random() < b.long_vehicle:
            return self._rng.uniform(9.0, 14.0)
        return self._rng.uniform(*b.length_m)

    async def _drive(self, up: bool, length: float, *, stop_m: float | None = None) -> None:
        """Move a vehicle of `length` over the loops (up: A first), setting the pins as it
        covers and clears them; with `stop_m`, its front stops there and it reverses out."""
        speed = self._rng.uniform(*self.behaviour.speed_mps)
        end = LOOP_B[1] + length + 1.0
        front = START_M
        forward = True
        chatter_at = (self._rng.uniform(0, end) if self._rng.random() < self.behaviour.chatter
                      else None)
        while True:
            front += (speed if forward else -speed) * DT_S
            if forward and stop_m is not None and front >= stop_m:
                forward = False
            if not forward and front <= START_M:
                self._set(up, front, length)
                return
            if forward and front >= end:
                self._set(up, front, length)
                return
            self._set(up, front, length)
            if chatter_at is not None and front >= chatter_at:
                chatter_at = None
                pin = self._pins[self._rng.randrange(2)]
                pin.set_level(not pin.level)
                await asyncio.sleep(self._rng.uniform(0.002, 0.03))
                pin.set_level(not pin.level)
            await asyncio.sleep(DT_S)

    def _set(self, up: bool, front: float, length: float) -> None:
        """The loops' levels for a vehicle whose front is at `front` (in its direction)."""
        rear = front - length
        first, second = self._pins if up else self._pins[::-1]
        # Going down, the vehicle meets B first: mirror the geometry.
        for pin, (lo, hi) in ((first, LOOP_A), (second, LOOP_B)):
            covered = front > lo and rear < hi
            if pin.level != covered:
                pin.set_level(covered)

