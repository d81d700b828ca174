"""Which way a vehicle crossed a level's ramp, from the edges of its two loops (sans-I/O).

A ramp has two loops a short way apart, A on the side a vehicle leaves from and B on the side
of the level it enters, spaced so that a car covers both for a moment. Each loop's detector
edge goes in (`RampDirection.edge`) with the monotonic time; a crossing comes out once the
vehicle has cleared both loops and they have stayed clear for `settle_s` (`tick`, at the time
`deadline` names: the shell sets a timer for it).

An *episode* runs from the first loop occupied until both loops are clear and settled. It is
judged by the loop first entered and the loop last cleared, both loops having been occupied:

- entered A, cleared B: IN (into the ramp's level); entered B, cleared A: OUT;
- entered and cleared the same loop: a vehicle that backed out (from A alone, or after
  reaching B), or something on one loop only: nothing.

So a long vehicle covering both loops at once counts once (the loops' overlap is one
episode), and a vehicle that hesitates, rolls back a little and goes on counts once. Two
vehicles bumper to bumper, which never leave both loops clear between them, are one episode
and count once: the loops cannot tell them from one long vehicle (the quiet-hour correction
and a technician's recount take that error out).

Chatter: a loop's pulse shorter than `glitch_s` (on, then off again) and a dropout shorter
than `glitch_s` (off, then on again) are taken out of the episode as if they never happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LoopName = Literal["a", "b"]
Crossing = Literal["in", "out"]


@dataclass(frozen=True, slots=True)
class Edge:
    """One loop's debounced change: a vehicle arrived on it (occupied) or left it."""

    loop: LoopName
    occupied: bool
    at: float  # monotonic seconds


@dataclass(slots=True)
class RampDirection:
    """The direction logic of one ramp's loop pair. Pure: edges and times in, crossings out."""

    glitch_s: float = 0.1
    settle_s: float = 0.6
    _state: dict[LoopName, bool] = field(default_factory=lambda: {"a": False, "b": False})
    _trace: list[Edge] = field(default_factory=list)  # the episode's edges, glitches removed
    _clear_since: float | None = None  # both loops clear since then, with an episode pending
    glitches: int = 0  # pulses and dropouts taken out
    backouts: int = 0  # episodes that counted nothing

    def __post_init__(self) -> None:
        if self.glitch_s < 0 or self.settle_s < self.glitch_s:
            raise ValueError("need 0 <= glitch_s <= settle_s")

    @property
    def occupied(self) -> tuple[bool, bool]:
        """(A, B) as the logic sees them, glitches removed."""
        return self._state["a"], self._state["b"]

    @property
    def deadline(self) -> float | None:
        """When `tick` should be called to close the pending episode; None: nothing pending."""
        return None if self._clear_since is None else self._clear_since + self.settle_s

    def edge(self, loop: LoopName, occupied: bool, at: float) -> Crossing | None:
        """Feed one loop edge; the crossing of an episode that this edge shows was over."""
        done = self.tick(at)  # an episode whose settle time passed before this edge
        if self._state[loop] == occupied:
            return done  # no change (a repeated report)
        self._state[loop] = occupied
        previous = next((e for e in reversed(self._trace) if e.loop == loop), None)
        if previous is not None and at - previous.at < self.glitch_s:
            # The loop went back within the glitch time: a pulse or a dropout, not a vehicle.
            self._trace.remove(previous)
            self.glitches += 1
        else:
            self._trace.append(Edge(loop, occupied, at))
        if any(self._state.values()):
            self._clear_since = None
        elif self._trace:
            self._clear_since = at
        else:
            self._clear_since = None  # a glitch alone: no episode
        return done

    def tick(self, now: float) -> Crossing | None:
        """Close the episode if both loops have stayed clear for `settle_s`; its crossing."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return None
        trace, self._trace, self._clear_since = self._trace, [], None
        crossing = judge(trace)
        if crossing is None:
            self.backouts += 1
        return crossing


def judge(trace: list[Edge]) -> Crossing | None:
    """The crossing an episode's edges show: by the loop first entered and the loop last
    cleared, both loops having been occupied; None when it backed out or touched one loop."""
    arrivals = [e.loop for e in trace if e.occupied]
    departures = [e.loop for e in trace if not e.occupied]
    if not arrivals or not departures or {"a", "b"} - set(arrivals):
        return None
    first, last = arrivals[0], departures[-1]
    if first == "a" and last == "b":
        return "in"
    if first == "b" and last == "a":
        return "out"
    return None
