"""Fakes for the lane tests: loops, a barrier that records every command, a camera, a reader.

The fake barrier checks the safety invariant itself: a lowering commanded while the safety loop
is occupied is recorded in ``unsafe``, which every lane test asserts stays empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from parking_sim.camera import GroundTruthReader

from gateway.config import LaneConfig
from gateway.controllers.lane import Lane, Position, TicketPrinter, TicketScanner
from gateway.controllers.sessions import SessionBook
from gateway.core.access import Access
from gateway.core.clock import FakeClock
from gateway.drivers import Frame
from gateway.journal import Journal


class FakeLoop:
    def __init__(self, name: str) -> None:
        self.name = name
        self.occupied = False
        self._listeners: list[Callable[[bool], None]] = []

    def subscribe(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def set(self, occupied: bool) -> None:
        if occupied != self.occupied:
            self.occupied = occupied
            for listener in list(self._listeners):
                listener(occupied)


class FakeBarrier:
    has_feedback = True

    def __init__(self, safety: FakeLoop) -> None:
        self.safety = safety
        self.position: Position = "down"
        self.faulted = False
        self.commands: list[str] = []
        self.unsafe: list[str] = []
        self._guard: Callable[[], bool] | None = None
        self._listeners: list[Callable[[Position], None]] = []

    def set_lower_guard(self, guard: Callable[[], bool] | None) -> None:
        self._guard = guard

    def subscribe(self, listener: Callable[[Position], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def move(self, position: Position) -> None:
        self.position = position
        for listener in list(self._listeners):
            listener(position)

    async def raise_(self) -> None:
        self.commands.append("raise")
        if self.faulted:
            return
        asyncio.get_running_loop().call_soon(self.move, "up")

    async def lower(self) -> None:
        if self._guard is not None and not self._guard():
            self.commands.append("lower-refused")
            raise RuntimeError("guard: vehicle under the barrier")
        if self.safety.occupied:
            self.unsafe.append(f"lowered over an occupied safety loop after {self.commands}")
        self.commands.append("lower")
        asyncio.get_running_loop().call_soon(self.move, "down")


class FakeCamera:
    """Each vehicle at the lane shows one plate; `show(None)` shows nothing readable."""

    def __init__(self, camera_id: str, clock: FakeClock) -> None:
        self.camera_id = camera_id
        self.clock = clock
        self.plate: str | None = None
        self.sequence = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def show(self, plate: str | None) -> None:
        self.plate = plate

    def _frame(self) -> Frame:
        self.sequence += 1
        return Frame(self.camera_id, np.zeros((4, 4, 3), np.uint8), self.clock.stamp(),
                     self.sequence, truth=self.plate)

    def latest(self) -> Frame | None:
        return self._frame()

    async def next_frame(self, timeout_s: float) -> Frame | None:
        await asyncio.sleep(0)
        return self._frame()


@dataclass
class Lot:
    free: int = 100
    is_online: bool = True
    passages: list[str] = field(default_factory=list)

    def free_bays(self) -> int:
        return self.free

    def online(self) -> bool:
        return self.is_online

    def note_passage(self, direction: str) -> None:
        self.passages.append(direction)


class Rig:
    """One lane with fakes around it, and helpers to drive a car through."""

    def __init__(self, config: LaneConfig, journal: Journal, clock: FakeClock, access: Access,
                 sessions: SessionBook, lot: Lot, *, printer: TicketPrinter | None = None,
                 scanner: TicketScanner | None = None) -> None:
        self.arming, self.safety, self.closing = (FakeLoop("arming"), FakeLoop("safety"),
                                                  FakeLoop("closing"))
        self.barrier = FakeBarrier(self.safety)
        self.camera = FakeCamera(config.id, clock)
        self.reader = GroundTruthReader()
        self.journal = journal
        self.clock = clock
        self.lane = Lane(config, arming=self.arming, safety=self.safety, closing=self.closing,
                         barrier=self.barrier, camera=self.camera, plates=self.reader,
                         access=access, sessions=sessions, journal=journal, clock=clock,
                         lot=lot, printer=printer, scanner=scanner)
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Rig]:
        self._task = asyncio.create_task(self.lane.run())
        try:
            await settle()
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            assert self.barrier.unsafe == []

    async def arrive(self, plate: str | None) -> None:
        self.camera.show(plate)
        self.arming.set(True)
        await until_idle(self.lane)

    async def drive_through(self) -> None:
        """From the arming loop, under the barrier, over the closing loop, and away."""
        for loop, value in ((self.safety, True), (self.arming, False), (self.closing, True),
                            (self.safety, False), (self.closing, False)):
            loop.set(value)
            self.clock.advance(0.5)
            await until_idle(self.lane)

    async def back_off(self) -> None:
        self.arming.set(False)
        await until_idle(self.lane)

    async def types(self) -> list[str]:
        return [r.type for r in await self.journal.read_outbox(0, 10_000)]

    async def events(self, type_: str) -> list[dict[str, Any]]:
        return [json.loads(r.data_json) for r in await self.journal.read_outbox(0, 10_000)
                if r.type == type_]


async def settle(rounds: int = 30) -> None:
    """Let the lane task and the journal's writer run until things are quiet."""
    for _ in range(rounds):
        await asyncio.sleep(0.002)


async def until_idle(lane: Lane, timeout_s: float = 10.0) -> None:
    """Until the lane has carried out the events posted to it (`Lane.drained`), what they
    started beside it has run (settle(): a plate read, the barrier), and what that posted has
    been carried out too. settle() alone is 60 ms of real time, and on a busy machine a journal
    look-up or write (its thread, its fsync) can take longer: on CI an exit once had its
    payments back only after the test had driven the car through, so it never ended the
    session."""
    try:
        async with asyncio.timeout(timeout_s):
            await lane.drained()
            await settle()
            await lane.drained()
    except TimeoutError:
        raise AssertionError(f"lane {lane.id} still busy after {timeout_s} s "
                             f"(state {lane.state})") from None
