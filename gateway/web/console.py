"""The web console's share of the server: its files, and the bays as its grid draws them.

The console is one page (`static/console.html`) with its stylesheet and script, written by
hand: no build step, no framework, nothing fetched from elsewhere, so that it works on a lot
with no internet. The server serves the files from the package, read once and kept; the page
reads the API like any client, as the viewer or technician it is logged in as.

`bays_document` is the bay grid's data (`GET /api/v1/bays`): each bay with a sensor and its
state, and for the bays without one (counted, not watched) how many of them are taken, per
floor, zone and type, shared out as the availability document shares them. No aiohttp here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.resources import files
from typing import Any

from gateway.config import BayConfig
from gateway.core.availability import Cell, Place, tally
from gateway.core.events import rfc3339

PAGE = "console.html"
# The files under /static/, and their media types: nothing else is served from the folder.
ASSETS: Mapping[str, str] = {
    "console.css": "text/css",
    "console.js": "text/javascript",
    "icon.svg": "image/svg+xml",
}
MEDIA = {PAGE: "text/html", **ASSETS}
# The page's own policy: scripts, styles and requests only from this server; no frames, no
# inline script (the page has none), no forms posted elsewhere.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
               " connect-src 'self'; base-uri 'none'; form-action 'none';"
               " frame-ancestors 'none'")


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media: str  # the Content-Type, with its charset


@cache
def asset(name: str) -> Asset:
    """One of the console's files (`PAGE` or an `ASSETS` name), read from the package once.
    Raises KeyError for any other name, and OSError if the install lacks it."""
    media = MEDIA[name]
    body = (files("gateway.web") / "static" / name).read_bytes()
    return Asset(body, f"{media}; charset=utf-8")


def bays_document(bays: Sequence[BayConfig], sensed: Iterable[Mapping[str, Any]], *,
                  inside: int, at: datetime) -> dict[str, Any]:
    """The bay grid at `at`: `bays`, each bay with a sensor (in the config's order) with its
    state and whether it is in service; `counted`, per floor, zone and type, the bays without
    one and how many of them are taken, an estimate from the `inside` vehicles that no sensed
    bay holds (as `gateway.core.availability.tally` makes it, so the two documents agree).

    `sensed` is the lot's `sensor_states()["bays"]`; a sensed bay missing from it is unknown.
    """
    states = {row["bayId"]: row for row in sensed}
    rows: list[dict[str, Any]] = []
    places: list[Place] = []
    for bay in bays:
        if bay.sensor.kind == "none":
            places.append(Place(bay.floor, bay.zone, bay.type, None))
            continue
        row = states.get(bay.id, {})
        state, in_service = row.get("state", "unknown"), bool(row.get("inService", True))
        places.append(Place(bay.floor, bay.zone, bay.type, state, in_service))
        rows.append({"bayId": bay.id, "floor": bay.floor, "zone": bay.zone, "type": bay.type,
                     "state": state, "inService": in_service})
    taken_by_sensed: Counter[Cell] = Counter(p.cell for p in places
                                             if p.in_service and p.state == "occupied")
    counted = [{"floor": floor, "zone": zone, "type": bay_type, "total": counts.counted,
                "occupied": counts.occupied - taken_by_sensed[(floor, zone, bay_type)]}
               for (floor, zone, bay_type), counts in tally(places, inside=inside).items()
               if counts.counted]
    return {"recordDateTime": rfc3339(at), "bays": rows, "counted": counted}
