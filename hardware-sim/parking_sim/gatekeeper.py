"""A simple lane keeper for running the simulated lot on its own, through the real drivers.

It stands in for the gateway's lane controller until that is attached: the lane's loops,
barrier and lamp are the gateway's own GPIO drivers (on the world's mock pins), the camera is
the lane's frame source and the plate comes from the ground-truth reader. Its policy is
plain: an entry admits everyone while a bay is free, except deny-listed plates; an exit lets
everyone out. It never lowers the barrier onto the safety loop (it waits for the loop to clear,
and the barrier driver checks again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from gateway.config import LaneConfig
from gateway.drivers import Frame, FrameSource
from gateway.drivers.gpio import BarrierRefusedError, LaneIo
from gateway.runtime.aio import cancel_and_wait
from parking_sim.camera import GroundTruthReader

log = structlog.get_logger(__name__)

Policy = Callable[[str, str | None], bool]
"""``(lane direction, plate or None) -> admit?``"""


@dataclass
class KeeperStats:
    admitted: int = 0
    refused: int = 0
    unread: int = 0
    lowered: int = 0
    lower_refusals: int = 0  # the driver refused to lower (the guard saw a vehicle)


class GateKeeper:
    """One lane's loop: arming loop -> read plate -> decide -> raise -> passage -> lower."""

    def __init__(
        self,
        lane: LaneConfig,
        io: LaneIo,
        camera: FrameSource,
        policy: Policy,
        *,
        reader: GroundTruthReader | None = None,
        frames: int = 3,
        pass_timeout_s: float = 30.0,
    ) -> None:
        self.lane = lane
        self.io = io
        self.camera = camera
        self.policy = policy
        self.reader = reader or GroundTruthReader()
        self.frames = frames
        self.pass_timeout_s = pass_timeout_s
        self.stats = KeeperStats()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self.run())

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def run(self) -> None:
        io = self.io
        while True:
            await io.arming.wait(True)
            plate = await self._read_plate()
            if plate is None:
                self.stats.unread += 1
            if not self.policy(self.lane.direction, plate):
                self.stats.refused += 1
                log.info("gatekeeper.refused", lane=self.lane.id, plate=plate)
                await io.arming.wait(False)  # the driver backs out (or gives up)
                continue
            self.stats.admitted += 1
            if io.lamp is not None:
                io.lamp.set(True)
            await io.barrier.raise_()
            await self._passage()
            if io.lamp is not None:
                io.lamp.set(False)
            await self._lower_when_clear()

    async def _read_plate(self) -> str | None:
        frames: list[Frame] = []
        for _ in range(self.frames):
            frame = await self.camera.next_frame(0.5)
            if frame is not None and frame.truth is not None:
                frames.append(frame)
        if not frames:
            return None
        result = await self.reader.read_frames(frames)
        return result.plate

    async def _passage(self) -> None:
        """Until the vehicle has gone through (or the pass timeout: it backed out)."""
        io = self.io
        marker = io.closing or io.safety
        if await marker.wait(True, self.pass_timeout_s):
            await marker.wait(False)
        # Else nobody came through (it backed out): close all the same, once the safety loop
        # is clear; a car now waiting at the line is served on the next round.

    async def _lower_when_clear(self) -> None:
        io = self.io
        while True:
            await io.safety.wait(False)
            try:
                await io.barrier.lower()
            except BarrierRefusedError:
                self.stats.lower_refusals += 1
                await asyncio.sleep(0.2)
                continue
            self.stats.lowered += 1
            return
