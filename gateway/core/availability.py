"""The availability document: how many bays are free, for the lot and by floor, zone and type.

Pure: the bays' states and the number of vehicles inside go in, one JSON-ready document per
lot comes out (`availability`), or any view of it narrowed to a floor, a zone or a bay type.
The same document is the retained MQTT state `occupancy`, the HTTP API's
`/api/v1/availability` and each event of its live stream; docs/schemas/availability.json
(`SCHEMA` below, written out) describes it.

Counts are kept per cell, one cell per floor, zone and bay type, and every figure is a sum of
cells, so a floor's count and the same floor asked for with a filter always agree:

- a sensed bay counts by its state (free, occupied, unknown) or as out of service;
- bays with no sensor are counted, not watched: the vehicles inside that no sensed bay
  accounts for are taken to fill them (as `controllers.occupancy` counts the lot), and that
  number is shared out over the cells in proportion to their counted bays (largest
  remainder, so the cells add up to it exactly). Such a figure is an estimate, and its
  `occupancyMethod` says so: `sensed` (every bay has a sensor), `counted` (none has; the
  lanes' count), `derived` (some have);
- a level counted at its ramps (`[[levels]]`, gateway.controllers.counting) is one cell of
  its capacity filled by its own count, `counting`; the vehicles on it are not in `inside`;
- `held` (bays held for reservations) is 0: a reservation today is a right to enter, and no
  bay is set aside for it. The field is there so that consumers need not change when one is.

APDS names where they fit: `recordDateTime` (APDS DemandTable/DemandType, when the record was
compiled) and `percentage` (APDS DemandType, percent of the bays in service occupied); `total`
is APDS Supply's `supplyQuantity` and `occupied` APDS DemandType's `count`, kept under the
names the other counts sit beside. APDS's `occupancyCalculation` (counted, derived, expected,
verified) has no value for a bay sensor's own reading, so the method is ours, documented.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from gateway.core.events import BayState, BayType, rfc3339
from gateway.core.operations import LotState

OccupancyMethod = Literal["sensed", "counted", "counting", "derived"]
Cell = tuple[str, str, str]  # floor, zone, bay type

# The document's format: raised when a field changes meaning or goes away (a new field alone
# does not raise it; consumers ignore what they do not know).
FORMAT_VERSION = 1
BAY_TYPES: tuple[str, ...] = get_args(BayType)


@dataclass(frozen=True, slots=True)
class Place:
    """One bay, as availability counts it."""

    floor: str
    zone: str
    bay_type: BayType
    state: BayState | None  # None: the bay has no sensor; it is counted
    in_service: bool = True

    @property
    def cell(self) -> Cell:
        return self.floor, self.zone, self.bay_type


@dataclass(frozen=True, slots=True)
class Counts:
    """The bays of a cell, or of any set of cells (their sum)."""

    free: int = 0
    occupied: int = 0
    unknown: int = 0
    out_of_service: int = 0
    held: int = 0
    sensed: int = 0  # bays with a sensor
    counted: int = 0  # bays without one
    ramp: int = 0  # bays of a level counted at its ramps

    @property
    def total(self) -> int:
        return self.sensed + self.counted + self.ramp

    @property
    def method(self) -> OccupancyMethod:
        named: tuple[tuple[OccupancyMethod, int], ...] = (
            ("sensed", self.sensed), ("counted", self.counted), ("counting", self.ramp))
        ways = [way for way, n in named if n]
        if len(ways) > 1:
            return "derived"
        return ways[0] if ways else "sensed"

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.free + other.free, self.occupied + other.occupied,
                      self.unknown + other.unknown, self.out_of_service + other.out_of_service,
                      self.held + other.held, self.sensed + other.sensed,
                      self.counted + other.counted, self.ramp + other.ramp)

    def as_dict(self) -> dict[str, Any]:
        in_service = self.total - self.out_of_service
        percentage = round(100.0 * self.occupied / in_service, 1) if in_service else 0.0
        return {"total": self.total, "free": self.free, "occupied": self.occupied,
                "unknown": self.unknown, "outOfService": self.out_of_service,
                "held": self.held, "percentage": percentage, "occupancyMethod": self.method}


@dataclass(frozen=True, slots=True)
class Where:
    """A view narrowed to one floor, zone and/or bay type (None: any)."""

    floor: str | None = None
    zone: str | None = None
    bay_type: str | None = None

    def __bool__(self) -> bool:
        return (self.floor, self.zone, self.bay_type) != (None, None, None)

    def matches(self, cell: Cell) -> bool:
        return all(want is None or want == have
                   for want, have in zip((self.floor, self.zone, self.bay_type), cell,
                                         strict=True))

    def as_dict(self) -> dict[str, str]:
        named = {"floor": self.floor, "zone": self.zone, "bayType": self.bay_type}
        return {key: value for key, value in named.items() if value is not None}


@dataclass(frozen=True, slots=True)
class Availability:
    """The lot's counts at one moment; `document()` is what is published and served."""

    lot_id: str
    gateway_id: str
    at: datetime
    lot_state: LotState
    cells: Mapping[Cell, Counts] = field(default_factory=dict)

    def same_as(self, other: Availability | None) -> bool:
        """Whether `other` shows the same (its time aside): then there is nothing new to say."""
        return (other is not None and other.lot_state == self.lot_state
                and other.cells == self.cells)

    def has(self, where: Where) -> bool:
        """Whether any bay is where `where` looks."""
        return any(where.matches(cell) for cell in self.cells)

    def names(self) -> dict[str, list[str]]:
        """The floors, zones and bay types the lot has, for a message naming what exists."""
        return {"floor": sorted({c[0] for c in self.cells}),
                "zone": sorted({c[1] for c in self.cells}),
                "type": sorted({c[2] for c in self.cells})}

    def document(self, where: Where | None = None) -> dict[str, Any]:
        """The availability document, of the whole lot or of the bays `where` matches."""
        where = where or Where()
        cells = {cell: counts for cell, counts in self.cells.items() if where.matches(cell)}
        lot = sum(cells.values(), Counts())
        doc: dict[str, Any] = {
            "version": FORMAT_VERSION, "lotId": self.lot_id, "gatewayId": self.gateway_id,
            "recordDateTime": rfc3339(self.at), "lotState": self.lot_state,
            "occupancyMethod": lot.method}
        if where:
            doc["filter"] = where.as_dict()
        doc["lot"] = lot.as_dict()
        for key, index in (("floors", 0), ("zones", 1), ("bayTypes", 2)):
            groups: dict[str, Counts] = defaultdict(Counts)
            for cell, counts in cells.items():
                groups[cell[index]] += counts
            doc[key] = {name: groups[name].as_dict() for name in sorted(groups)}
        return doc


def tally(places: Iterable[Place], *, inside: int,
          levels: Mapping[Cell, tuple[int, int]] | None = None) -> dict[Cell, Counts]:
    """Each cell's counts; the counted bays filled with the vehicles no sensed bay holds.

    As the lot counts its free bays: only an occupied sensed bay *in service* accounts for a
    vehicle inside, and the counted bays take no more vehicles than they have room for.
    `levels`: the cells of levels counted at their ramps, (capacity, count) each.
    """
    states: dict[Cell, Counter[str]] = defaultdict(Counter)
    for place in places:
        tally = states[place.cell]
        tally["sensed" if place.state is not None else "unsensed"] += 1
        if not place.in_service:
            tally["out_of_service"] += 1
        else:
            tally[place.state or "room"] += 1  # room: a counted bay in service
    room = {cell: tally["room"] for cell, tally in states.items() if tally["room"]}
    sensed_occupied = sum(tally["occupied"] for tally in states.values())
    filled = max(0, min(sum(room.values()), inside - sensed_occupied))
    shares = _apportion(filled, room)
    cells = {}
    for cell in sorted(states):
        t, taken = states[cell], shares.get(cell, 0)
        cells[cell] = Counts(
            free=t["free"] + t["room"] - taken, occupied=t["occupied"] + taken,
            unknown=t["unknown"], out_of_service=t["out_of_service"], sensed=t["sensed"],
            counted=t["unsensed"])
    for cell, (capacity, count) in (levels or {}).items():
        taken = max(0, min(capacity, count))
        cells[cell] = cells.get(cell, Counts()) + Counts(free=capacity - taken, occupied=taken,
                                                         ramp=capacity)
    return cells


def _apportion(total: int, weights: Mapping[Cell, int]) -> dict[Cell, int]:
    """`total` shared out in proportion to `weights`, in whole numbers adding up to it: each
    gets its quota rounded down, and the ones left go to the largest remainders (ties to
    the first cell in order, so the same lot always shares alike)."""
    whole = sum(weights.values())
    if not whole:
        return {}
    shares = {cell: total * weight // whole for cell, weight in weights.items()}
    left = total - sum(shares.values())
    by_remainder = sorted(weights, key=lambda cell: (-(total * weights[cell] % whole), cell))
    for cell in by_remainder[:left]:
        shares[cell] += 1
    return shares


def availability(places: Iterable[Place], *, inside: int, lot_id: str, gateway_id: str,
                 at: datetime, lot_state: LotState, where: Where | None = None
                 ) -> dict[str, Any]:
    """The availability document of a lot whose bays are `places`, `inside` vehicles in it."""
    return Availability(lot_id, gateway_id, at, lot_state,
                        tally(places, inside=inside)).document(where)


# --- the document's JSON Schema (docs/schemas/availability.json is this, written out) --------

_COUNTS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "total": {"type": "integer", "minimum": 0,
                  "description": "Bays (APDS Supply supplyQuantity), out of service included."},
        "free": {"type": "integer", "minimum": 0},
        "occupied": {"type": "integer", "minimum": 0,
                     "description": "Occupied bays (APDS DemandType count)."},
        "unknown": {"type": "integer", "minimum": 0,
                    "description": "Sensed bays whose sensor is faulty or silent: never free."},
        "outOfService": {"type": "integer", "minimum": 0},
        "held": {"type": "integer", "minimum": 0,
                 "description": "Held for reservations; 0 until the gateway holds bays for"
                                " them (a reservation is a right to enter, no bay is set"
                                " aside)."},
        "percentage": {"type": "number", "minimum": 0, "maximum": 100,
                       "description": "Percent of the bays in service occupied (APDS"
                                      " DemandType percentage); 0 when none is in service."},
        "occupancyMethod": {"$ref": "#/$defs/occupancyMethod"},
    },
    "required": ["total", "free", "occupied", "unknown", "outOfService", "held", "percentage",
                 "occupancyMethod"],
    "additionalProperties": False,
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://schemas.parking-gateway.example/v1/availability.json",
    "title": "availability",
    "description": (
        "How many bays are free, for the lot and by floor, zone and bay type: the retained"
        " MQTT state `occupancy`, GET /api/v1/availability and each event of its stream."
        " Every figure is a sum of per floor, zone and type cells, so the views agree."),
    "type": "object",
    "properties": {
        "version": {"const": FORMAT_VERSION,
                    "description": "The document's format; raised when a field changes"
                                   " meaning."},
        "lotId": {"type": "string", "minLength": 1},
        "gatewayId": {"type": "string", "minLength": 1},
        "recordDateTime": {
            "description": "When the counts were compiled (APDS recordDateTime): the change"
                           " they show. RFC 3339, UTC.",
            "type": "string", "format": "date-time"},
        "lotState": {"enum": list(get_args(LotState)),
                     "description": "What the entry lanes do: open, full (free bays at or"
                                    " below the lot's threshold) or closed by an operator."},
        "occupancyMethod": {"$ref": "#/$defs/occupancyMethod"},
        "filter": {
            "description": "Present when the view is narrowed (HTTP filters).",
            "type": "object",
            "properties": {"floor": {"type": "string"}, "zone": {"type": "string"},
                           "bayType": {"enum": list(BAY_TYPES)}},
            "additionalProperties": False},
        "lot": {"$ref": "#/$defs/counts"},
        "floors": {"type": "object", "additionalProperties": {"$ref": "#/$defs/counts"}},
        "zones": {"type": "object", "additionalProperties": {"$ref": "#/$defs/counts"}},
        "bayTypes": {"type": "object", "propertyNames": {"enum": list(BAY_TYPES)},
                     "additionalProperties": {"$ref": "#/$defs/counts"}},
    },
    "required": ["version", "lotId", "gatewayId", "recordDateTime", "lotState",
                 "occupancyMethod", "lot", "floors", "zones", "bayTypes"],
    "additionalProperties": False,
    "$defs": {
        "occupancyMethod": {
            "enum": list(get_args(OccupancyMethod)),
            "description": "sensed: every bay counted has a sensor; counted: none has, the"
                           " lanes' count of vehicles inside fills them; counting: a level"
                           " counted at its ramps, its count fills it; derived: a mix, and"
                           " the vehicles no sensed bay holds are shared out over the"
                           " bays with no sensor (an estimate). APDS occupancyCalculation"
                           " would call sensed `counted` and the others `derived`."},
        "counts": _COUNTS,
    },
}
