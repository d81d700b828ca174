"""Who comes, when, and for how long: the lot's traffic, deterministic by seed.

Arrivals are a non-homogeneous Poisson process whose rate is given per hour of the day
(sampled by thinning); each visit's stay follows a Normal distribution clipped to a range. The
population mixes permit holders, reservation holders, visitors and deny-listed plates, each
with a plate in one of the configured country formats. A permit holder comes back on later
days with the same plate (the lot sees regulars), a visitor is new each time.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Kind = Literal["permit", "reservation", "visitor", "denied"]
KINDS: tuple[Kind, ...] = ("permit", "reservation", "visitor", "denied")

# Plate masks per format: L a letter, D a digit, anything else is printed as is (a separator).
# The truth a camera carries is the plate normalised (A-Z, 0-9 only).
PLATE_MASKS: Mapping[str, str] = {
    "eu": "LL-DDD-LL",  # EU style (France's SIV): AB-123-CD
    "de": "LL LL DDDD",  # German style with a district prefix (printed with a space)
    "uk": "LLDD LLL",  # UK current style: AB12 CDE
    "us": "DLLLDDD",  # US (California style): 7ABC123
    "br": "LLLDLDD",  # Brazil Mercosul: ABC1D23
}
# Letters that national schemes leave out because they read as digits.
_LETTERS = "".join(c for c in string.ascii_uppercase if c not in "IOQ")


def plate_text(mask: str, rng: np.random.Generator) -> str:
    """A printed plate for a mask, e.g. ``AB-123-CD``."""
    out = []
    for symbol in mask:
        if symbol == "L":
            out.append(_LETTERS[int(rng.integers(len(_LETTERS)))])
        elif symbol == "D":
            out.append(str(int(rng.integers(10))))
        else:
            out.append(symbol)
    return "".join(out)


def normalise(printed: str) -> str:
    return "".join(c for c in printed.upper() if c.isalnum())


@dataclass(frozen=True, slots=True)
class Vehicle:
    plate: str  # normalised, as a camera's truth carries it
    printed: str  # as painted on the plate
    fmt: str  # key of PLATE_MASKS
    kind: Kind


@dataclass(frozen=True, slots=True)
class Arrival:
    at_s: float  # seconds from the start of the run
    vehicle: Vehicle
    stay_s: float
    tailgates: bool  # follows the car ahead closely through the barrier
    reverses: bool  # changes its mind at the barrier and backs out
    length_m: float
    speed_mps: float  # walking-pace speed through the lane


@dataclass(frozen=True)
class TrafficModel:
    """Parameters of a lot's traffic (a scenario's [traffic], [population] and [driving])."""

    rate_per_hour: Sequence[float]  # 24 values: mean arrivals in each hour of the day
    stay_mean_min: float = 120.0
    stay_sd_min: float = 90.0
    stay_min_min: float = 5.0
    stay_max_min: float = 720.0
    mix: Mapping[Kind, float] | None = None  # weights, normalised
    formats: Mapping[str, float] | None = None
    permit_pool: int = 40  # regulars that hold a permit
    # The share of permit arrivals on a cloned plate, which may already be inside.
    clone_prob: float = 0.02
    tailgate_prob: float = 0.03
    reverse_prob: float = 0.02
    length_m: tuple[float, float] = (3.5, 5.5)
    speed_mps: tuple[float, float] = (1.0, 4.0)

    def __post_init__(self) -> None:
        if len(self.rate_per_hour) != 24:
            raise ValueError("rate_per_hour needs 24 values, one per hour of the day")
        if any(rate < 0 for rate in self.rate_per_hour):
            raise ValueError("arrival rates must be >= 0")
        if not 0 <= self.tailgate_prob <= 1 or not 0 <= self.reverse_prob <= 1:
            raise ValueError("probabilities must be within 0..1")
        if not 0 < self.stay_min_min <= self.stay_max_min:
            raise ValueError("need 0 < stay_min_min <= stay_max_min")
        mix = self.mix or {"permit": 0.2, "reservation": 0.1, "visitor": 0.65, "denied": 0.05}
        if set(mix) - set(KINDS) or sum(mix.values()) <= 0:
            raise ValueError(f"population mix needs weights for {', '.join(KINDS)}")
        object.__setattr__(self, "mix", dict(mix))
        formats = self.formats or {"eu": 1.0}
        unknown = set(formats) - set(PLATE_MASKS)
        if unknown:
            known = sorted(PLATE_MASKS)
            raise ValueError(f"unknown plate formats {sorted(unknown)}; known: {known}")
        object.__setattr__(self, "formats", dict(formats))


class Traffic:
    """Arrivals of one run: the same seed gives the same cars at the same times."""

    def __init__(
        self,
        model: TrafficModel,
        *,
        seed: int,
        start_hour: float = 0.0,
        plate_pool: Sequence[str] | None = None,
    ) -> None:
        """``plate_pool``: draw plates from these (the plates of a photo library) in turn."""
        self.model = model
        self.seed = seed
        self._start_hour = start_hour
        self._rng = np.random.default_rng(seed)
        self._pool = list(plate_pool or ())
        self._rng.shuffle(self._pool)
        self._pool_next = 0
        formats = model.formats or {}
        self._fmt_names = list(formats)
        self._fmt_p = _normalised_weights(formats.values())
        mix = model.mix or {}
        self._kinds = list(mix)
        self._kind_p = _normalised_weights(mix.values())
        # Regulars, deny-listed plates and booked plates are drawn once: the backend knows them.
        self.permits = [self._vehicle("permit") for _ in range(model.permit_pool)]
        self.denied = [self._vehicle("denied") for _ in range(max(3, model.permit_pool // 8))]
        self.reservations: list[Vehicle] = []
        # Whether a plate is in the lot now (the world says): a regular does not come twice.
        self.present: Callable[[str], bool] = lambda plate: False
        self._t = 0.0  # the time of the last arrival drawn
        self._tailgater_next = False  # the last arrival drawn may have a tailgater behind it
        self._mark = self._here()

    def _vehicle(self, kind: Kind) -> Vehicle:
        if self._pool:
            plate = self._pool[self._pool_next % len(self._pool)]
            self._pool_next += 1
            return Vehicle(normalise(plate), plate, "photo", kind)
        fmt = self._fmt_names[int(self._rng.choice(len(self._fmt_names), p=self._fmt_p))]
        printed = plate_text(PLATE_MASKS[fmt], self._rng)
        return Vehicle(normalise(printed), printed, fmt, kind)

    def _rate(self, t_s: float) -> float:
        hour = int((self._start_hour + t_s / 3600.0) % 24)
        return float(self.model.rate_per_hour[hour]) / 3600.0

    def arrivals(self, duration_s: float) -> Iterator[Arrival]:
        """Arrivals in [0, duration_s), in time order (Lewis-Shedler thinning), from where the
        last call (or :meth:`resume`) left off."""
        peak = max(self.model.rate_per_hour) / 3600.0
        if peak <= 0:
            return
        while True:
            self._mark = self._here()  # a restart draws again from here: the arrival coming
            if self._tailgater_next:
                self._tailgater_next = False
                if self._rng.random() < self.model.tailgate_prob:
                    # A tailgater arrives right behind a car, to slip through with it.
                    self._t += float(self._rng.uniform(0.5, 2.0))
                    if self._t < duration_s:
                        yield self._arrival(self._t, tailgates=True)
                continue
            self._t += float(self._rng.exponential(1.0 / peak))
            if self._t >= duration_s:
                return
            if self._rng.random() * peak <= self._rate(self._t):
                self._tailgater_next = True
                yield self._arrival(self._t, tailgates=False)

    def position(self) -> dict[str, Any]:
        """Where the arrivals stand, before the one drawn last (the arrival still to come):
        JSON, for a restart's saved state."""
        return self._mark

    def _here(self) -> dict[str, Any]:
        return {"t": self._t, "tailgater_next": self._tailgater_next,
                "pool_next": self._pool_next, "rng": self._rng.bit_generator.state}

    def resume(self, position: dict[str, Any]) -> None:
        """Go on from a :meth:`position`: the same arrivals as a run that never stopped."""
        self._t = float(position["t"])
        self._tailgater_next = bool(position["tailgater_next"])
        self._pool_next = int(position["pool_next"])
        self._rng.bit_generator.state = position["rng"]
        self._mark = self._here()

    def skip(self, until_s: float) -> list[Arrival]:
        """Draw the arrivals before `until_s` (a restart after a hard stop, later than the
        saved state) and leave the position at the first one after."""
        skipped = list(self.arrivals(until_s))
        self.resume(self._mark)
        return skipped

    def _arrival(self, t: float, *, tailgates: bool) -> Arrival:
        model, rng = self.model, self._rng
        kind: Kind = self._kinds[int(rng.choice(len(self._kinds), p=self._kind_p))]
        home = [v for v in self.permits if not self.present(v.plate)]
        if kind == "permit" and self.permits and rng.random() < self.model.clone_prob:
            # A cloned permit plate: possibly one already inside (anti-passback's case).
            vehicle = self.permits[int(rng.integers(len(self.permits)))]
        elif kind == "permit" and home:
            vehicle = home[int(rng.integers(len(home)))]
        elif kind == "denied" and self.denied:
            vehicle = self.denied[int(rng.integers(len(self.denied)))]
        else:
            vehicle = self._vehicle(kind)
            if kind == "reservation":
                self.reservations.append(vehicle)
        stay_min = float(np.clip(rng.normal(model.stay_mean_min, model.stay_sd_min),
                                 model.stay_min_min, model.stay_max_min))
        return Arrival(
            at_s=t,
            vehicle=vehicle,
            stay_s=stay_min * 60.0,
            tailgates=tailgates,
            reverses=bool(rng.random() < model.reverse_prob),
            length_m=float(rng.uniform(*model.length_m)),
            speed_mps=float(rng.uniform(*model.speed_mps)),
        )


def _normalised_weights(values: Iterable[float]) -> list[float]:
    weights = [float(v) for v in values]
    total = sum(weights)
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError("weights must be >= 0 and not all 0")
    return [w / total for w in weights]
