"""The simulated ramp through the gateway's loops, direction logic and counting controller."""

from __future__ import annotations

from parking_sim.ramp_bench import run_day
from parking_sim.ramps import RampBehaviour


def test_every_vehicle_is_counted_when_none_follows_bumper_to_bumper() -> None:
    # Back-outs, long vehicles and chatter, all of them often: none may change the count.
    rough = RampBehaviour(back_out=0.3, long_vehicle=0.3, chatter=0.5, close_follow=0.0)
    day = run_day(5, correct_at=None, hours=4, behaviour=rough)
    assert day.vehicles > 30
    assert day.back_outs > 0
    assert day.count == day.truth


def test_bumper_to_bumper_pairs_drift_the_count_and_the_quiet_hour_corrects_it() -> None:
    # Ending at 04:00 (from 06:00), so that the 03:30 correction falls inside the day.
    close = RampBehaviour(close_follow=1.0)
    plain = run_day(13, correct_at=None, hours=22, behaviour=close)
    fixed = run_day(13, correct_at="03:30", hours=22, behaviour=close)
    print(f"\nerror without correction {plain.error:+d}, with {fixed.error:+d}"
          f" ({plain.close_follows} pairs bumper to bumper)")
    assert plain.close_follows > 0
    assert abs(plain.error) <= plain.close_follows
    assert plain.error != 0
    assert fixed.error == 0
