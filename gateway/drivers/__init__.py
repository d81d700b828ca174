"""Hardware drivers: GPIO loops, relays and ultrasonic bays; the RS-485 sensor bus; cameras.

The types here are what the drivers hand to the controllers (occupancy, lanes, plate reading).
They are plain values, so a simulator or a test can produce them without any hardware.
Drivers do all their timing through the running asyncio loop (``loop.time()``, ``asyncio.sleep``,
``call_later``) and the injected :class:`~gateway.core.clock.Clock`, never through
``time.time()``, so the whole lot also runs under the simulator's virtual-time loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.core.events import BayState

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from gateway.core.clock import Stamp

BayReadingState = BayState


@dataclass(frozen=True, slots=True)
class BayReading:
    """What one bay sensor says now.

    ``unknown`` carries a ``fault`` (why): a node that stopped answering, a sensor that reports a
    fault, an ultrasonic sensor with no echo. A faulty sensor never reads ``free``.
    """

    bay_id: str
    state: BayReadingState
    source: str  # "modbus:<unit>" or "ultrasonic:<trigger pin>"
    at: Stamp
    fault: str | None = None
    raw: float | None = None  # magnetic magnitude or distance in cm, for diagnostics


BayListener = Callable[[BayReading], None]
"""Called on the event loop's thread whenever a bay's debounced state changes."""


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One camera frame: a BGR image as OpenCV gives it, with when and where it was taken.

    ``truth`` is set only by the simulator (the plate it rendered), for its ground-truth reader
    and for evaluation; a real camera leaves it None.
    """

    camera_id: str
    image: npt.NDArray[np.uint8]
    at: Stamp
    sequence: int
    truth: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class FrameSource(Protocol):
    """A camera: the newest frame, never a backlog."""

    camera_id: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def latest(self) -> Frame | None:
        """The newest frame not older than the source's staleness bound, else None."""
        ...

    async def next_frame(self, timeout_s: float) -> Frame | None:
        """The next frame newer than any returned before, or None after ``timeout_s``."""
        ...
