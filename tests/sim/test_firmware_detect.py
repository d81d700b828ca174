"""The sensor node's detection (firmware/sensor_node/detect.py) under CPython, on simulated physics.

The physics is the hardware simulator's (drift, noise, cars that bend the field); the detector
is the firmware's own module, loaded from its file.
"""

from __future__ import annotations

import random

import pytest
from parking_sim.nodes import BayPhysics, load_firmware, random_car

detect = load_firmware("detect")

SETTINGS = {"dwell_on_ms": 2000, "dwell_off_ms": 3000, "drift_tau_s": 900}


def bay(index: int = 0, seed: int = 1, **kw: float) -> BayPhysics:
    rng = random.Random(seed)
    return BayPhysics(index, rng, (rng.gauss(180, 40), rng.gauss(-40, 40), 420.0), **kw)


def run(detector, physics: BayPhysics, start_s: float, end_s: float, step_s: float = 1.0,
        changes: list[tuple[float, bool]] | None = None) -> None:
    """Sample the physics every ``step_s`` from start to end; record state changes."""
    t = start_s
    state = detector.occupied
    while t < end_s:
        detector.update(int(t * 1000), physics.field_at(t), physics.distance_at())
        if detector.occupied != state and changes is not None:
            changes.append((t, detector.occupied))
        state = detector.occupied
        t += step_s


def calibrated(physics: BayPhysics, **settings: float):
    return detect.Detector({**SETTINGS, **settings}, baseline=physics.empty_field(0.0))


def test_calibration_learns_the_empty_field_then_reports_free():
    physics = bay()
    detector = detect.Detector(SETTINGS)
    assert detector.calibrating
    run(detector, physics, 0, 31)
    assert detector.calibrating  # 32 samples are needed
    run(detector, physics, 31, 40)
    assert not detector.calibrating
    error = max(abs(a - b) for a, b in zip(detector.baseline, physics.empty_field(20),
                                           strict=True))
    assert error < 2.0  # the mean of 32 samples with 3 mG noise
    assert not detector.occupied


def test_two_days_of_drift_and_noise_never_flip_an_empty_bay():
    # 40 mG of drift: more than the 30 mG "empty" band, so only baseline tracking saves it.
    physics = bay(drift_rate_mg_h=40 / 48, drift_daily_mg=8.0, noise_mg=4.0)
    detector = calibrated(physics)
    changes: list[tuple[float, bool]] = []
    run(detector, physics, 0, 48 * 3600, step_s=2.0, changes=changes)
    assert changes == []
    drift = physics.empty_field(48 * 3600)
    assert max(abs(a - b) for a, b in zip(detector.baseline, drift, strict=True)) < 10


def test_without_tracking_the_same_drift_would_read_occupied():
    """The control for the test above: it fails if the baseline stops following drift."""
    physics = bay(drift_rate_mg_h=40 / 48 * 3, drift_daily_mg=0.0)
    detector = calibrated(physics, drift_tau_s=0)  # 0: tracking off
    changes: list[tuple[float, bool]] = []
    run(detector, physics, 0, 48 * 3600, step_s=5.0, changes=changes)
    assert changes
    assert changes[0][1] is True


def test_a_long_stay_is_not_learnt_as_the_empty_field():
    physics = bay(drift_rate_mg_h=1.0)
    detector = calibrated(physics)
    run(detector, physics, 0, 600)
    baseline_before = detector.baseline
    physics.cars.append(random_car(random.Random(3), 0.0))
    changes: list[tuple[float, bool]] = []
    run(detector, physics, 600, 600 + 12 * 3600, step_s=2.0, changes=changes)
    assert [state for _, state in changes] == [True]  # occupied once, for the whole stay
    assert detector.baseline == baseline_before  # frozen while occupied
    physics.cars.clear()
    run(detector, physics, 600 + 12 * 3600, 600 + 12 * 3600 + 60, changes=changes)
    assert [state for _, state in changes] == [True, False]


@pytest.mark.parametrize("seed", range(12))
def test_dwell_times_hold_back_a_change(seed: int):
    physics = bay(seed=seed)
    detector = calibrated(physics)
    run(detector, physics, 0, 10, step_s=0.1)
    physics.cars.append(random_car(random.Random(seed), 0.0))
    changes: list[tuple[float, bool]] = []
    run(detector, physics, 10, 20, step_s=0.1, changes=changes)
    (t_on, state), = changes
    assert state is True
    assert 12.0 <= t_on <= 12.3  # dwell_on_ms = 2000
    physics.cars.clear()
    run(detector, physics, 20, 30, step_s=0.1, changes=changes)
    t_off = changes[1][0]
    assert 23.0 <= t_off <= 23.3  # dwell_off_ms = 3000


def test_a_car_passing_over_the_sensor_is_not_a_parked_car():
    physics = bay()
    detector = calibrated(physics)
    run(detector, physics, 0, 10, step_s=0.1)
    physics.cars.append(random_car(random.Random(1), 0.0))
    run(detector, physics, 10, 11.5, step_s=0.1)  # 1.5 s, shorter than the 2 s dwell
    physics.cars.clear()
    changes: list[tuple[float, bool]] = []
    run(detector, physics, 11.5, 30, step_s=0.1, changes=changes)
    assert changes == []
    assert not detector.occupied


@pytest.mark.parametrize("seed", range(20))
def test_a_car_across_two_bays_takes_both_and_a_neighbour_bay_stays_free(seed: int):
    rng = random.Random(seed)
    left, right, far = bay(0, seed), bay(1, seed + 100), bay(2, seed + 200)
    detectors = [calibrated(p) for p in (left, right, far)]
    car = random_car(rng, 0.5)  # straddles the line between bays 0 and 1
    for physics in (left, right, far):
        physics.cars.append(car)
    for physics, detector in zip((left, right, far), detectors, strict=True):
        run(detector, physics, 0, 20, step_s=0.2)
    assert [d.occupied for d in detectors] == [True, True, False]


@pytest.mark.parametrize("seed", range(20))
def test_a_car_in_the_next_bay_does_not_take_this_one(seed: int):
    this, nxt = bay(0, seed), bay(1, seed + 50)
    detectors = [calibrated(this), calibrated(nxt)]
    car = random_car(random.Random(seed), 1.0)
    this.cars.append(car)
    nxt.cars.append(car)
    for physics, detector in zip((this, nxt), detectors, strict=True):
        run(detector, physics, 0, 20, step_s=0.2)
    assert [d.occupied for d in detectors] == [False, True]


def test_hysteresis_holds_the_state_inside_the_band():
    detector = detect.Detector({**SETTINGS, "dwell_on_ms": 0, "dwell_off_ms": 0},
                               baseline=(0.0, 0.0, 400.0))
    detector.update(0, (0.0, 0.0, 470.0))  # 70 mG: a car
    assert detector.occupied
    detector.update(100, (0.0, 0.0, 445.0))  # 45 mG: inside 30..60, stays occupied
    assert detector.occupied
    detector.update(200, (0.0, 0.0, 420.0))  # 20 mG: empty
    assert not detector.occupied
    detector.update(300, (0.0, 0.0, 445.0))  # back into the band: stays free
    assert not detector.occupied


FUSED = {**SETTINGS, "dwell_on_ms": 0, "dwell_off_ms": 0, "us_on_cm": 80}


@pytest.mark.parametrize(
    ("field_z", "distance", "occupied"),
    [
        (500.0, 35.0, True),  # both see a car
        (500.0, None, True),  # no echo: the magnetometer decides
        (500.0, 250.0, False),  # a field change with nothing overhead: a lorry in the aisle
        (400.0, 40.0, False),  # something overhead with no steel: a person, a trolley
        (400.0, 250.0, False),
    ],
)
def test_fusion_with_an_ultrasonic_sensor(field_z: float, distance: float | None,
                                          occupied: bool):
    detector = detect.Detector(FUSED, baseline=(0.0, 0.0, 400.0))
    for t in range(5):
        detector.update(t * 100, (0.0, 0.0, field_z), distance)
    assert detector.occupied is occupied


def test_ultrasonic_confirms_a_weak_magnetic_signal():
    """A car with little steel over the sensor (inside the band) is taken on the echo."""
    detector = detect.Detector(FUSED, baseline=(0.0, 0.0, 400.0))
    detector.update(0, (0.0, 0.0, 445.0), 30.0)
    assert detector.occupied


def test_a_failing_magnetometer_raises_a_sensor_fault_and_recovers():
    detector = detect.Detector(SETTINGS, baseline=(0.0, 0.0, 400.0))
    for t in range(9):
        detector.update(t * 100, None)
    assert not detector.sensor_fault  # a few misses are tolerated
    detector.update(1000, None)
    assert detector.sensor_fault
    detector.update(1100, (0.0, 0.0, 400.0))
    assert not detector.sensor_fault


def test_an_ultrasonic_that_never_echoes_is_flagged():
    detector = detect.Detector(FUSED, baseline=(0.0, 0.0, 400.0))
    for t in range(40):
        detector.update(t * 100, (0.0, 0.0, 400.0), None)
    assert detector.us_fault
    detector.update(4000, (0.0, 0.0, 400.0), 250.0)
    assert not detector.us_fault
