"""Today's occupancy by hour and revenue, for the console's charts (`GET /api/v1/report/today`).

The same report as `parking-gateway report --day <today> --json` (gateway.journal.report), from
the same events: the hourly occupancy roll-ups, the fees of the sessions that ended and the
payments. It is kept up as the journal grows rather than read whole at each request: the
first request of a lot-local day finds where the day's events begin (a binary search on the
events' times, about 20 reads of one event), and each request after it reads only the events
stored since the one before. What is kept is the day's wanted events alone (a few per vehicle).
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta

from gateway.core.records import OutboxRecord
from gateway.journal.report import WANTED, DayReport, day_hours, summarise
from gateway.web.lot import LotView, StoredEvents

PAGE = 1000  # events read at once
# Events are stored in the order they happen, each with its time; an event of today stored
# before this much ahead of the day's start (a clock set back by NTP) would be missed.
EARLY = timedelta(hours=1)


class TodayReport:
    """Call `report()` for today's hours so far."""

    def __init__(self, lot: LotView) -> None:
        self._lot = lot
        self._day: date | None = None
        self._after = 0  # the last sequence read
        self._records: list[OutboxRecord] = []
        self._reading = asyncio.Lock()  # one reader: concurrent requests wait for its result

    async def report(self) -> DayReport:
        lot = self._lot
        gateway = lot.settings.gateway
        tz = gateway.tzinfo
        async with self._reading:
            now = lot.clock.now()
            day = now.astimezone(tz).date()
            if day != self._day:
                start = day_hours(day, tz)[0].start
                self._day, self._records = day, []
                self._after = await first_after(lot.journal, start - EARLY)
            await self._read_new(lot.journal)
            result = summarise(self._records, day, tz, lot_id=gateway.lot_id, now=now)
        if result.currency is None:  # no money yet today: amounts in the lot's currency
            result.currency = lot.settings.tariffs[gateway.default_tariff].currency
        return result

    async def _read_new(self, journal: StoredEvents) -> None:
        while records := await journal.read_events(self._after, PAGE):
            self._records += (r for r in records if r.type in WANTED)
            self._after = records[-1].seq
            if len(records) < PAGE:
                return


async def first_after(journal: StoredEvents, at: datetime) -> int:
    """A sequence after which the stored events are those of `at` or later: the smallest `s`
    whose next stored event is not older than `at` (the journal's last sequence if none is).
    Pruned events leave gaps in the sequence; the search reads the next event that is kept."""
    low, high = 0, journal.last_seq
    while low < high:
        middle = (low + high) // 2
        following = await journal.read_events(middle, 1)
        if not following or datetime.fromisoformat(following[0].time) >= at:
            high = middle
        else:
            low = following[0].seq  # every sequence up to it is followed by an older event
    return low
