"""Virtual and scaled time for asyncio: a lot's day in minutes, with the daemon's own code.

The gateway does all its timing through ``loop.time()``, ``asyncio.sleep`` and ``call_later`` and
an injected :class:`~gateway.core.clock.Clock`. Running it on a :class:`TimeWarpLoop` changes what a
second is without changing a line of it:

* virtual (``scale=None``): ``loop.time()`` is a counter. When nothing is ready the loop first
  looks for real I/O for a short real moment (``io_grace_s``, about 1 ms), so that results from
  threads (gpiozero callbacks) and real file descriptors (a pty) still arrive before time moves
  on; then it jumps straight to its next timer. While a call of the journal is out on its
  SQLite thread (``gateway.journal.connection.calls_in_flight``), time stands still: a commit
  and its fsync take no virtual time, however long they take for real.
* scaled (``scale=X``): ``loop.time()`` runs X times faster than the monotonic clock, and every
  select waits 1/X of the time asked for.

:class:`VirtualClock` is the matching :class:`~gateway.core.clock.Clock`: its monotonic time is the
loop's time and its wall time moves with it from a chosen start.
"""

from __future__ import annotations

import asyncio
import math
import selectors
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from gateway.core.clock import Stamp
from gateway.journal.connection import calls_in_flight

T = TypeVar("T")

DEFAULT_IO_GRACE_S = 0.001
HOLD_WAIT_S = 0.05  # the longest real wait for held thread work before looking again
DEFAULT_START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


class _Timebase:
    """The loop's notion of now, shared by the loop and its selector."""

    def __init__(self, scale: float | None, start: float) -> None:
        self.scale = scale
        self.virtual_now = start
        self._real0 = time.monotonic()
        self._start = start

    def now(self) -> float:
        if self.scale is None:
            return self.virtual_now
        return self._start + (time.monotonic() - self._real0) * self.scale

    def real_at(self, virtual: float, pace: float) -> float:
        """When, on the real monotonic clock, a paced virtual run reaches `virtual`."""
        return self._real0 + (virtual - self._start) / pace

    def virtual_at(self, pace: float) -> float:
        """The virtual time a paced run has reached by now."""
        return self._start + (time.monotonic() - self._real0) * pace


class _WarpSelector(selectors.DefaultSelector):
    """The loop's selector, waiting in warped time."""

    def __init__(self, timebase: _Timebase, io_grace_s: float) -> None:
        super().__init__()
        self._tb = timebase
        self._grace = io_grace_s
        # While any of these says so, virtual time stands still: work is under way in a thread
        # (a SQLite commit with its fsync) whose result must arrive before the next timer.
        self.holds: list[Callable[[], bool]] = []
        self.pace: float | None = None  # virtual seconds per real second, at most

    def select(
        self, timeout: float | None = None
    ) -> list[tuple[selectors.SelectorKey, int]]:
        tb = self._tb
        if tb.scale is not None:
            real = None if timeout is None else timeout / tb.scale
            events: list[tuple[selectors.SelectorKey, int]] = super().select(real)
            return events
        if timeout is None or timeout <= 0:
            # Nothing scheduled: only real I/O (a thread, a pty) can wake us, so wait for it.
            return list(super().select(timeout))
        events = super().select(min(timeout, self._grace))
        if events:
            return events
        if any(hold() for hold in self.holds):
            return list(super().select(min(timeout, HOLD_WAIT_S)))  # time stands still
        target = max(tb.virtual_now + timeout, math.nextafter(tb.virtual_now, math.inf))
        if self.pace is not None:
            # Never ahead of real time times the pace: a live view shows the lot at that speed.
            wait = tb.real_at(target, self.pace) - time.monotonic()
            if wait > 0:
                events = super().select(wait)
                if events:
                    tb.virtual_now = min(target, max(tb.virtual_now, tb.virtual_at(self.pace)))
                    return events
        # Always move: a timeout below the clock's float resolution would otherwise leave
        # time where it is, and a caller waiting for "now >= due" would spin forever.
        tb.virtual_now = target
        return events


class TimeWarpLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual (``scale=None``) or runs ``scale`` times fast."""

    def __init__(
        self,
        scale: float | None = None,
        *,
        io_grace_s: float = DEFAULT_IO_GRACE_S,
        start: float = 0.0,
    ) -> None:
        self._timebase = _Timebase(scale, start)
        super().__init__(_WarpSelector(self._timebase, io_grace_s))
        if (scale is not None and scale <= 0) or io_grace_s < 0:
            self.close()  # a half-made loop would complain when collected
            raise ValueError("a time scale must be > 0 and io_grace_s >= 0")
        # A journal call out on its connection's thread (a commit and its fsync) takes no
        # virtual time, however long it takes for real.
        self.hold_while(lambda: calls_in_flight(self) > 0)

    def time(self) -> float:
        return self._timebase.now()

    def hold_while(self, busy: Callable[[], bool]) -> None:
        """Virtual time: do not move on while ``busy()`` (thread work under way)."""
        self._selector.holds.append(busy)  # type: ignore[attr-defined]

    def set_pace(self, pace: float | None) -> None:
        """Virtual time: run at most ``pace`` times as fast as real time (None: flat out)."""
        if pace is not None and pace <= 0:
            raise ValueError("a pace must be > 0")
        self._selector.pace = pace  # type: ignore[attr-defined]

    @property
    def scale(self) -> float | None:
        """None for virtual time, else how many loop seconds pass per real second."""
        return self._timebase.scale


class VirtualClock:
    """A :class:`~gateway.core.clock.Clock` that reads the loop's (virtual or scaled) time.

    Monotonic time is the loop's time, so durations the daemon measures with the clock agree
    with its sleeps and timers; wall time starts at ``start`` and moves with it.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        start: datetime = DEFAULT_START,
        *,
        synced: bool = True,
        boot_id: str = "sim-boot-1",
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("VirtualClock needs a tz-aware start time")
        self._loop = loop
        self._start = start.astimezone(UTC)
        self._t0 = loop.time()
        self._synced = synced
        self._boot_id = boot_id

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.elapsed())

    def monotonic(self) -> float:
        return self._loop.time()

    def synchronized(self) -> bool:
        return self._synced

    def boot_id(self) -> str:
        return self._boot_id

    def stamp(self) -> Stamp:
        return Stamp(self.now(), self.monotonic(), self._boot_id, self._synced)

    def elapsed(self) -> float:
        """Seconds of loop time since the clock was made."""
        return self._loop.time() - self._t0


def run(
    main: Callable[[VirtualClock], Coroutine[Any, Any, T]],
    *,
    scale: float | None = None,
    start: datetime = DEFAULT_START,
    io_grace_s: float = DEFAULT_IO_GRACE_S,
) -> T:
    """Run ``main(clock)`` to completion on a fresh :class:`TimeWarpLoop`, as ``asyncio.run``."""

    def factory() -> asyncio.AbstractEventLoop:
        return TimeWarpLoop(scale, io_grace_s=io_grace_s)

    with asyncio.Runner(loop_factory=factory) as runner:
        clock = VirtualClock(runner.get_loop(), start)
        return runner.run(main(clock))
