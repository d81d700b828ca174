"""A simulated lot across restarts: its state saved beside the journal, and resumed from.

``parking-gateway demo --state-dir D`` keeps ``D/world.json`` next to the journal: the lot time,
every vehicle (queued at an entry, driving, parked in its bay, on its way out, with when it
moves on), the traffic's position and the truth's counts. It is written atomically (a
temporary file, fsynced, renamed over the old one) every :data:`SAVE_EVERY_S` lot seconds and
once more when the demo stops, after the daemon has; a start that finds it goes on from there,
with the vehicles inside still inside and the lot's clock where it stopped.

The journal is what the barriers recorded, so where the two differ the lot follows the journal,
as a real lot's cars did what the gateway saw them do. After a clean stop they differ only by a
vehicle that was crossing an entry's loops: inside if its session opened, else it queues again.
After a hard kill (no save at the stop) the state is the last periodic save, up to
:data:`SAVE_EVERY_S` behind the journal, and the lot catches up with it:

* the lot time resumes at the journal's newest event, never before (a session must not end
  before it began), and the arrivals in between are drawn and gone;
* a vehicle saved inside whose plate no longer has an open session left meanwhile: it is gone;
* an open session whose plate no saved vehicle has came in meanwhile: that vehicle is inside,
  parking in a free bay (with the stay the traffic drew for it, when it is among the arrivals
  skipped);
* an open session without a plate (a tailgater the camera missed) stays with no vehicle: no
  car can be told to it, and the gateway's overstay check reports it in time, as on a real lot.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.core.clock import Clock
from gateway.core.rights import Reservation
from gateway.journal import JournalError, JournalReader
from parking_sim.scenario import Scenario
from parking_sim.traffic import Arrival, Kind, Vehicle
from parking_sim.world import Placed, SavedWorld, World

STATE_FILE = "world.json"
SAVE_EVERY_S = 300.0  # lot seconds between saves: what a hard kill can lose
VERSION = 1


@dataclass(frozen=True, slots=True)
class SavedLot:
    """The file's content: the world, when it was saved, and what it ran."""

    scenario: str
    seed: int
    lot_time: datetime  # the lot's clock at the save
    starts: int  # how often the lot has been started (each start is a new boot)
    world: SavedWorld
    reservations: tuple[dict[str, Any], ...] = ()  # what the backend had pushed (JSON)


def write(state_dir: Path, lot: SavedLot) -> Path:
    """Write the state atomically: a reader (or the next start) sees the old or the new file."""
    path = state_dir / STATE_FILE
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps(_dump(lot), separators=(",", ":")).encode()
    with tmp.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    directory = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)
    return path


def read(state_dir: Path) -> SavedLot | None:
    """The saved state, or None where there is none (a first start)."""
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise StateError(f"{path}: unreadable ({e}); remove it to start the lot afresh") from None
    if data.get("version") != VERSION:
        raise StateError(f"{path}: version {data.get('version')!r}, this simulator reads "
                         f"{VERSION}; remove it to start the lot afresh")
    try:
        return _parse(data)
    except (KeyError, TypeError, ValueError) as e:
        raise StateError(f"{path}: not a saved lot ({e!r}); remove it to start afresh") from None


class StateError(ValueError):
    """A saved state that cannot be resumed from; the message says which and what to do."""


@dataclass(frozen=True, slots=True)
class Journaled:
    """What the journal says when the lot starts again."""

    newest: datetime | None  # the time of its newest event
    plates: Mapping[str, str]  # plate -> right kind, of every open session with a plate


async def journaled(path: Path) -> Journaled:
    """The open sessions and the newest event time of the journal at `path` (none: empty)."""
    try:
        reader = await JournalReader.open(path)
    except JournalError:
        return Journaled(None, {})
    try:
        sessions = await reader.open_sessions()
        tail = await reader.tail(50)
    finally:
        await reader.close()
    newest = max((datetime.fromisoformat(r.time) for r in tail), default=None)
    return Journaled(newest, {s.plate: s.right_kind for s in sessions if s.plate})


@dataclass(frozen=True)
class Restart:
    """How a run starts (afresh, or from a saved state and the journal) and where it saves."""

    state_dir: Path
    scenario: Scenario
    saved: SavedLot | None
    journal: Journaled
    at: datetime  # the lot time the run starts at
    starts: int  # this start's number, from 1

    @property
    def boot_id(self) -> str:
        """Each start is a new boot: the loop's monotonic clock starts again at 0."""
        return f"sim-boot-{self.starts}"

    @property
    def behind(self) -> bool:
        """The journal has moved on since the save (a hard kill), or there is no save."""
        newest = self.journal.newest
        return newest is not None and (self.saved is None or newest > self.saved.lot_time)

    def resume(self, world: World) -> None:
        """Put the saved lot, reconciled with the journal, into a new `world` (not started)."""
        if self.saved is None and self.journal.newest is None:
            return  # a first start
        start = self.scenario.scenario.start
        base = (self.saved.world if self.saved is not None
                else SavedWorld(0.0, (), world.traffic.position(), {}))
        world.traffic.resume(base.traffic)
        elapsed_s = max(base.elapsed_s, (self.at - start) / timedelta(seconds=1))
        skipped = world.traffic.skip(elapsed_s)
        moved_on = replace(base, elapsed_s=elapsed_s, traffic=world.traffic.position())
        world.resume(reconcile(moved_on, self.journal, behind=self.behind, skipped=skipped,
                               known=world.traffic.permits,
                               stay_s=self.scenario.traffic.stay_mean_min * 60.0))

    def save(self, world: World, clock: Clock, reservations: Sequence[Reservation]) -> Path:
        return write(self.state_dir, SavedLot(
            self.scenario.scenario.name, world.seed, clock.now(), self.starts, world.saved(),
            tuple(r.model_dump(mode="json") for r in reservations[-200:])))


async def restart(state_dir: Path, scenario: Scenario, journal_path: Path) -> Restart:
    """Read the saved state (if any) and the journal: where a start goes on from."""
    saved = read(state_dir)
    if saved is not None and saved.scenario != scenario.scenario.name:
        raise StateError(f"{state_dir / STATE_FILE} holds a lot of scenario "
                         f"{saved.scenario!r}, not {scenario.scenario.name!r}; use another "
                         "state directory")
    journal = await journaled(journal_path)
    return Restart(state_dir, scenario, saved, journal,
                   resume_at(scenario.scenario.start, saved, journal),
                   1 if saved is None else saved.starts + 1)


def resume_at(start: datetime, saved: SavedLot | None, journal: Journaled) -> datetime:
    """The lot time a start goes on from: the save's, or the journal's newest event if later."""
    at = start if saved is None else saved.lot_time
    return at if journal.newest is None else max(at, journal.newest)


def reconcile(world: SavedWorld, journal: Journaled, *, behind: bool,
              skipped: Iterable[Arrival], known: Iterable[Vehicle], stay_s: float
              ) -> SavedWorld:
    """The saved world made to agree with the journal (see the module's docstring).

    `behind`: the journal has moved on since the save (a hard kill, or no save at all).
    `skipped`: the arrivals drawn and gone between the save and the lot time resumed at;
    `known`: vehicles the backend knows (permit holders), whose plates may come back;
    `stay_s`: the stay of a vehicle found only in the journal.
    """
    sessions = dict(journal.plates)
    vehicles: list[Placed] = []
    for placed in world.vehicles:
        # Inside, and (after a hard kill) still in the journal: it stays. First, so that a
        # cloned plate queued at an entry does not take its twin's session.
        if placed.inside and (sessions.pop(placed.arrival.vehicle.plate, None) is not None
                              or not behind):
            vehicles.append(placed)
    for placed in world.vehicles:
        if not placed.inside:  # it passed as the lot stopped if its session opened
            opened = sessions.pop(placed.arrival.vehicle.plate, None) is not None
            vehicles.append(replace(placed, phase="to_bay") if opened else placed)
    if behind:
        drawn = {a.vehicle.plate: a for a in skipped}
        kinds = {v.plate: v for v in known}
        for plate, right in sessions.items():
            arrival = drawn.get(plate) or _arrival(kinds.get(plate) or _vehicle(plate, right),
                                                   stay_s)
            vehicles.append(Placed(arrival, "to_bay"))
    return replace(world, vehicles=tuple(vehicles))


def _vehicle(plate: str, right: str) -> Vehicle:
    kind: Kind = ("permit" if right in ("permit", "account") else
                  "reservation" if right == "reservation" else "visitor")
    return Vehicle(plate, plate, "eu", kind)


def _arrival(vehicle: Vehicle, stay_s: float) -> Arrival:
    return Arrival(0.0, vehicle, stay_s, tailgates=False, reverses=False, length_m=4.5,
                   speed_mps=2.0)


# --- the file's JSON -------------------------------------------------------------------------


def _dump(lot: SavedLot) -> dict[str, Any]:
    return {
        "version": VERSION, "scenario": lot.scenario, "seed": lot.seed,
        "lotTime": lot.lot_time.isoformat(), "starts": lot.starts,
        "elapsedS": lot.world.elapsed_s, "traffic": lot.world.traffic,
        "truth": lot.world.truth, "reservations": list(lot.reservations),
        "vehicles": [{"phase": p.phase, "bay": p.bay, "dueInS": round(p.due_in_s, 3),
                      "ticket": p.ticket, **_arrival_json(p.arrival)}
                     for p in lot.world.vehicles],
    }


def _arrival_json(a: Arrival) -> dict[str, Any]:
    v = a.vehicle
    return {"plate": v.plate, "printed": v.printed, "fmt": v.fmt, "kind": v.kind,
            "atS": a.at_s, "stayS": a.stay_s, "tailgates": a.tailgates, "reverses": a.reverses,
            "lengthM": a.length_m, "speedMps": a.speed_mps}


def _parse(data: dict[str, Any]) -> SavedLot:
    vehicles = tuple(
        Placed(Arrival(float(v["atS"]), Vehicle(v["plate"], v["printed"], v["fmt"], v["kind"]),
                       float(v["stayS"]), bool(v["tailgates"]), bool(v["reverses"]),
                       float(v["lengthM"]), float(v["speedMps"])),
               v["phase"], v["bay"], float(v["dueInS"]), v.get("ticket"))
        for v in data["vehicles"])
    world = SavedWorld(float(data["elapsedS"]), vehicles, dict(data["traffic"]),
                       {str(k): int(n) for k, n in data["truth"].items()})
    return SavedLot(str(data["scenario"]), int(data["seed"]),
                    datetime.fromisoformat(data["lotTime"]), int(data["starts"]), world,
                    tuple(data["reservations"]))


