"""What the HTTP server may know of the lot: `LotControl` (the technician's actions and reads,
as the control socket has them) and the few reads only the API serves.

The daemon's app implements it; the server owns no lot state.
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.config import Settings
from gateway.core.clock import Clock
from gateway.core.operations import LotControl
from gateway.core.records import OutboxRecord


class StoredEvents(Protocol):
    """The journal's read side, as the console's day report reads it (`journal.Journal`)."""

    @property
    def last_seq(self) -> int: ...

    async def read_events(self, after: int, limit: int = 500) -> list[OutboxRecord]: ...


class LotView(LotControl, Protocol):
    @property
    def settings(self) -> Settings:
        """The lot's configuration: its bays, time zone and currency, for the console."""
        ...

    @property
    def clock(self) -> Clock:
        """The lot's clock: what "today" is (a simulated lot's is not the machine's)."""
        ...

    @property
    def journal(self) -> StoredEvents: ...

    def readiness(self) -> dict[str, bool]:
        """Each condition of readiness (the journal open, the lanes turning, ...), by name."""
        ...

    async def events_after(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Stored events with a sequence above `after`, at most `limit`, in order: each the
        CloudEvent as the backend receives it."""
        ...

    def reader_stats(self) -> dict[str, Any] | None:
        """The plate reader's counters and latencies (`WorkerStats`); None without a reader."""
        ...

    def vehicles_uncounted(self) -> int:
        """The vehicles inside less those on the levels counted at their ramps: the ones the
        bays hold, sensed or not (the bay grid spreads them over the bays with no sensor)."""
        ...

    def sensor_states(self) -> dict[str, Any]:
        """Each sensed bay's state now (`bays`: bayId, floor, zone, type, state, inService,
        ...), as `sensors watch` opens with it."""
        ...
