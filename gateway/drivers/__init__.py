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
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gateway.core.events import BayState, Severity
from gateway.core.records import Alarm
from gateway.runtime.aio import TaskSet

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


@runtime_checkable
class MonitoredSource(Protocol):
    """A frame source that reports its own state (the gateway's cameras; a simulator's need not)."""

    def summary(self) -> dict[str, Any]:
        """The camera's state for `status`: connected, unreachable or stale, last frame age."""
        ...


class AlarmSink(Protocol):
    """Where drivers raise and clear alarms; :class:`~gateway.journal.Journal` is one."""

    async def raise_alarm(self, alarm: Alarm) -> None: ...

    async def clear_alarm(self, alarm_id: str, message: str = "cleared") -> None: ...


_RANK: dict[Severity, int] = {"info": 0, "warning": 1, "critical": 2}


class AlarmLatch:
    """A part's alarms, passed to the sink in the background and only when a condition changes.

    A driver re-checks its conditions every cycle; the latch keeps that from becoming a stream of
    journal writes. The first word on each alarm id is always passed on, a clear included, so an
    alarm that was active before a restart is cleared once its condition is found gone. An alarm
    set again with a higher severity (some bus nodes silent, then all) is cleared and raised
    anew, so the backend sees it; it never steps down (a recovering bus would otherwise say so
    twice). Its message and details otherwise stay those of its raising; the part's status
    shows the current picture.
    """

    def __init__(self, sink: AlarmSink | None, owner: str, **context: Any) -> None:
        self._sink = sink
        self._raised: dict[str, Severity | None] = {}  # id -> severity; None: cleared
        self._tasks = TaskSet(owner, **context)

    def set(self, alarm: Alarm) -> None:
        """The alarm's condition holds."""
        was = self._raised.get(alarm.alarm_id)
        if self._sink is None or (was is not None
                                  and _RANK[alarm.severity] <= _RANK[was]):
            return
        if was is not None:
            self._tasks.spawn(self._sink.clear_alarm(alarm.alarm_id, f"now {alarm.severity}"))
        self._raised[alarm.alarm_id] = alarm.severity
        self._tasks.spawn(self._sink.raise_alarm(alarm))

    def clear(self, alarm_id: str, message: str) -> None:
        """The alarm's condition is gone."""
        if self._sink is None or (alarm_id in self._raised and self._raised[alarm_id] is None):
            return
        self._raised[alarm_id] = None
        self._tasks.spawn(self._sink.clear_alarm(alarm_id, message))

    def raised(self, alarm_id: str) -> bool:
        return self._raised.get(alarm_id) is not None

    def close(self) -> None:
        """Drop what is still on its way to the sink (the part is stopping)."""
        self._tasks.cancel()
