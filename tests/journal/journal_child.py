"""Child process for the crash test: appends through the journal until it is killed.

Prints `ready`, then one line `<seq> <event id>` for every event whose commit
returned, that is, every event the journal acknowledged as durable.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import structlog

from gateway.config import JournalConfig
from gateway.core import events
from gateway.core.clock import SystemClock
from gateway.journal import Journal, SetBayState

PRODUCERS = 8


async def main(path: Path) -> None:
    clock = SystemClock()
    journal = await Journal.open(JournalConfig(path=path, maintenance_interval_s=3600),
                                 clock=clock)
    print("ready", flush=True)

    async def producer(n: int) -> None:
        bay = f"bay-{n}"
        k = 0
        while True:
            k += 1
            state: events.BayState = "occupied" if k % 2 else "free"
            previous: events.BayState = "free" if k % 2 else "occupied"
            ev = events.bay_changed(
                at=clock.now(), bay_id=bay, floor="1", zone="A", bay_type="regular",
                state=state, previous_state=previous, source="magnetic", sensor_healthy=True)
            (seq,) = await journal.commit([SetBayState(bay, state, ev.time, "magnetic", True)],
                                          [ev])
            sys.stdout.write(f"{seq} {ev.id}\n")
            sys.stdout.flush()

    await asyncio.gather(*(producer(n) for n in range(PRODUCERS)))


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    asyncio.run(main(Path(sys.argv[1])))
