"""What the HTTP server may know of the lot: `LotControl` (the technician's actions and reads,
as the control socket has them) and the few reads only the API serves.

The daemon's app implements it; the server owns no lot state.
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.core.operations import LotControl


class LotView(LotControl, Protocol):
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
