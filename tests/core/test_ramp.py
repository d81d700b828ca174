"""The ramp loops' direction logic: tables of edge sequences, then random days of vehicles."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.ramp import RampDirection

GLITCH_S = 0.1
SETTLE_S = 0.6

Step = tuple[str, bool, float]  # loop, occupied, time


def run(steps: Sequence[Step], ramp: RampDirection | None = None) -> list[str]:
    """Feed the edges, then let the last episode settle; the crossings, in order."""
    ramp = ramp or RampDirection(GLITCH_S, SETTLE_S)
    out = [c for loop, occupied, at in steps
           if (c := ramp.edge(loop, occupied, at)) is not None]  # type: ignore[arg-type]
    end = steps[-1][2] + 10.0 if steps else 0.0
    if (c := ramp.tick(end)) is not None:
        out.append(c)
    return out


FORWARD = [("a", True, 0.0), ("b", True, 1.0), ("a", False, 1.5), ("b", False, 2.5)]
BACKWARD = [("b", True, 0.0), ("a", True, 1.0), ("b", False, 1.5), ("a", False, 2.5)]

CASES: dict[str, tuple[list[Step], list[str]]] = {
    "A then B counts in": (FORWARD, ["in"]),
    "B then A counts out": (BACKWARD, ["out"]),
    "on A, backs out": ([("a", True, 0.0), ("a", False, 2.0)], []),
    "reaches B, backs out through A": (
        [("a", True, 0.0), ("b", True, 1.0), ("b", False, 2.0), ("a", False, 3.0)], []),
    "from the level, reaches A, backs out through B": (
        [("b", True, 0.0), ("a", True, 1.0), ("a", False, 2.0), ("b", False, 3.0)], []),
    "long vehicle covers both a long while, counts once": (
        [("a", True, 0.0), ("b", True, 0.8), ("a", False, 9.0), ("b", False, 9.8)], ["in"]),
    "hesitates, rolls back onto A only, then goes on": (
        [("a", True, 0.0), ("b", True, 1.0), ("b", False, 1.5), ("b", True, 3.0),
         ("a", False, 3.5), ("b", False, 4.5)], ["in"]),
    "a short gap between the loops within the settle time still counts": (
        [("a", True, 0.0), ("a", False, 1.0), ("b", True, 1.3), ("b", False, 2.3)], ["in"]),
    "a pulse on B alone is nothing": ([("b", True, 0.0), ("b", False, 0.05)], []),
    "chatter on B while a car sits on A does not count": (
        [("a", True, 0.0), ("b", True, 1.0), ("b", False, 1.03), ("a", False, 2.0)], []),
    "a pulse on B just before a car enters A": (
        [("b", True, 0.0), ("b", False, 0.03), *[(lp, o, t + 0.3) for lp, o, t in FORWARD]],
        ["in"]),
    "a pulse on A just after the car cleared B": (
        [*FORWARD, ("a", True, 2.8), ("a", False, 2.85)], ["in"]),
    "a dropout of A under the car is bridged": (
        [("a", True, 0.0), ("a", False, 0.5), ("a", True, 0.55), ("b", True, 1.0),
         ("a", False, 1.5), ("b", False, 2.5)], ["in"]),
    "a dropout of B as the car leaves is bridged": (
        [*FORWARD[:3], ("b", False, 2.0), ("b", True, 2.04), ("b", False, 2.5)], ["in"]),
    "two cars, one after the other, count two": (
        [*FORWARD, *[(loop, occ, t + 5.0) for loop, occ, t in FORWARD]], ["in", "in"]),
    "in then out": ([*FORWARD, *[(loop, occ, t + 5.0) for loop, occ, t in BACKWARD]],
                    ["in", "out"]),
    "a repeated report changes nothing": (
        [("a", True, 0.0), ("a", True, 0.5), ("b", True, 1.0), ("a", False, 1.5),
         ("b", False, 2.5), ("b", False, 2.6)], ["in"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_direction_table(case: str) -> None:
    steps, expected = CASES[case]
    assert run(steps) == expected


def test_the_crossing_comes_once_the_loops_have_settled() -> None:
    ramp = RampDirection(GLITCH_S, SETTLE_S)
    for loop, occupied, at in FORWARD:
        assert ramp.edge(loop, occupied, at) is None  # type: ignore[arg-type]
    assert ramp.deadline == pytest.approx(2.5 + SETTLE_S)
    assert ramp.tick(2.5 + SETTLE_S / 2) is None
    assert ramp.tick(2.5 + SETTLE_S) == "in"
    assert ramp.deadline is None
    assert ramp.tick(100.0) is None  # counted once


def test_an_edge_after_the_settle_time_closes_the_episode_first() -> None:
    ramp = RampDirection(GLITCH_S, SETTLE_S)
    for loop, occupied, at in FORWARD:
        ramp.edge(loop, occupied, at)  # type: ignore[arg-type]
    assert ramp.edge("b", True, 10.0) == "in"  # the next vehicle's edge, no tick in between
    assert ramp.occupied == (False, True)


def test_backouts_and_glitches_are_counted_for_diagnostics() -> None:
    ramp = RampDirection(GLITCH_S, SETTLE_S)
    run([("a", True, 0.0), ("a", False, 2.0), ("b", True, 5.0), ("b", False, 5.02)], ramp)
    assert ramp.backouts == 1
    assert ramp.glitches == 1


def test_bad_timings_are_refused() -> None:
    with pytest.raises(ValueError, match="settle_s"):
        RampDirection(glitch_s=1.0, settle_s=0.5)


# --- random days: the net count is the vehicles that went in less those that came out ------

# What one vehicle does at the ramp, as its edges relative to its arrival (durations are
# drawn well above the glitch time, as a real vehicle's are).
KINDS = ("in", "out", "back_a", "back_b", "long_in", "long_out")


@st.composite
def vehicle(draw: st.DrawFn) -> tuple[str, list[Step]]:
    kind = draw(st.sampled_from(KINDS))
    dur = st.floats(min_value=0.2, max_value=3.0)
    x1, x2, x3 = draw(dur), draw(dur), draw(dur)
    if kind.startswith("long"):
        x2 = draw(st.floats(min_value=5.0, max_value=30.0))  # both loops covered a long time
    first, second = ("a", "b") if kind in ("in", "long_in", "back_a", "back_b") else ("b", "a")
    if kind == "back_a":
        steps = [(first, True, 0.0), (first, False, x1)]
    elif kind == "back_b":  # reaches B, backs out through A
        steps = [(first, True, 0.0), (second, True, x1), (second, False, x1 + x2),
                 (first, False, x1 + x2 + x3)]
    else:
        steps = [(first, True, 0.0), (second, True, x1), (first, False, x1 + x2),
                 (second, False, x1 + x2 + x3)]
    # Chatter: short pulses on a free loop, short dropouts of an occupied one.
    for _ in range(draw(st.integers(0, 2))):
        loop = draw(st.sampled_from(("a", "b")))
        at = draw(st.floats(min_value=0.0, max_value=steps[-1][2]))
        width = draw(st.floats(min_value=0.001, max_value=GLITCH_S * 0.9))
        state = _state_at(steps, loop, at)
        if _state_at(steps, loop, at + width) != state or _edge_near(steps, loop, at,
                                                                     width + GLITCH_S):
            continue  # the glitch would straddle a real edge: not a glitch any more
        steps += [(loop, not state, at), (loop, state, at + width)]
    net = {"in": "in", "long_in": "in", "out": "out", "long_out": "out"}.get(kind, "")
    return net, sorted(steps, key=lambda s: s[2])


def _state_at(steps: list[Step], loop: str, at: float) -> bool:
    state = False
    for name, occupied, t in sorted(steps, key=lambda s: s[2]):
        if name == loop and t <= at:
            state = occupied
    return state


def _edge_near(steps: list[Step], loop: str, at: float, within: float) -> bool:
    return any(name == loop and abs(t - at) <= within for name, _, t in steps)


@settings(max_examples=300, deadline=None)
@given(st.lists(vehicle(), max_size=30),
       st.lists(st.floats(min_value=SETTLE_S + 0.1, max_value=60.0), min_size=30,
                max_size=30))
def test_random_vehicles_give_the_right_net_count(
        vehicles: list[tuple[str, list[Step]]], gaps: list[float]) -> None:
    steps: list[Step] = []
    t = 0.0
    for (_, edges), gap in zip(vehicles, gaps, strict=False):
        steps += [(loop, occupied, t + at) for loop, occupied, at in edges]
        t = steps[-1][2] + gap
    crossings = run(steps)
    expected_in = sum(1 for net, _ in vehicles if net == "in")
    expected_out = sum(1 for net, _ in vehicles if net == "out")
    assert crossings.count("in") == expected_in
    assert crossings.count("out") == expected_out
    assert crossings == [net for net, _ in vehicles if net]
