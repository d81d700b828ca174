"""Vehicle detection for one bay: magnetometer baseline, drift tracking, hysteresis, dwell, fusion.

A parked car's steel bends the Earth's field above the sensor by tens to hundreds of
milligauss; the field also drifts slowly with temperature and season. So:

- at install (or on the calibrate command) the mean of ``calibration_samples`` readings of the
  empty bay becomes the baseline;
- the baseline follows slow drift, but only while the bay is free and the reading is well inside
  the "empty" band, so a car parked for a week is never learnt as the empty field;
- the deviation |B - baseline| votes "car" above ``on_mg`` and "empty" below ``off_mg``; in
  between it abstains (hysteresis);
- an optional ultrasonic sensor looking up from the bay votes the same way on distance;
  the two votes are fused (a magnetic disturbance with nothing overhead is a neighbour's car or
  a lorry passing; something overhead with no magnetic change is a person or a trolley);
- a new state must hold for ``dwell_on_ms`` / ``dwell_off_ms`` before it is reported.

Pure logic with millisecond timestamps passed in: it runs under MicroPython and CPython alike.
"""

import math

CAR = 1
EMPTY = 0
ABSTAIN = -1

DEFAULTS = {
    "on_mg": 60,  # deviation that means a car (milligauss)
    "off_mg": 30,  # deviation below which the bay is empty
    "dwell_on_ms": 2000,
    "dwell_off_ms": 3000,
    "drift_tau_s": 900,  # time constant of baseline tracking while free
    "calibration_samples": 32,
    "us_on_cm": 0,  # ultrasonic: 0 = not fitted; else a car when closer than this
    "us_hyst_cm": 15,
    "fault_after_misses": 10,  # consecutive failed magnetometer reads before a sensor fault
}


class Detector:
    """The debounced state of one bay from a stream of sensor samples.

    Call ``update(now_ms, field, distance_cm)`` for every sample: ``field`` is (x, y, z) in
    milligauss or None when the magnetometer read failed; ``distance_cm`` is the ultrasonic
    distance, None for no echo, or ignored when no ultrasonic is fitted.
    """

    def __init__(self, settings=None, baseline=None):
        self.settings = dict(DEFAULTS)
        if settings:
            self.settings.update(settings)
        self.baseline = tuple(baseline) if baseline else None
        self.occupied = False
        self.sensor_fault = False
        self.us_fault = False
        self.deviation_mg = 0.0
        self.magnitude_mg = 0.0
        self.distance_cm = None
        self.changes = 0
        self.calibrations = 0  # completed calibrations, so a new baseline gets saved
        self._candidate = None
        self._since_ms = 0
        self._last_ms = None
        self._misses = 0
        self._us_misses = 0
        self._cal = None  # [sum x, sum y, sum z, n] while calibrating
        if self.baseline is None:
            self.start_calibration()

    @property
    def calibrating(self):
        return self._cal is not None

    def start_calibration(self):
        """Learn a new empty-bay baseline from the next samples (the bay must be empty)."""
        self._cal = [0.0, 0.0, 0.0, 0]

    def update(self, now_ms, field, distance_cm=None):
        """Take one sample; return whether the bay is (debounced) occupied."""
        dt_ms = 0 if self._last_ms is None else max(0, now_ms - self._last_ms)
        self._last_ms = now_ms
        self._track_ultrasonic(distance_cm)
        if field is None:
            self._misses += 1
            if self._misses >= self.settings["fault_after_misses"]:
                self.sensor_fault = True
            return self.occupied
        self._misses = 0
        self.sensor_fault = False
        x, y, z = field
        self.magnitude_mg = math.sqrt(x * x + y * y + z * z)
        if self._cal is not None:
            self._calibrate(x, y, z)
            return self.occupied
        bx, by, bz = self.baseline
        self.deviation_mg = math.sqrt((x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2)
        vote = self._fuse(self._magnetic_vote(), self._ultrasonic_vote())
        self._debounce(now_ms, vote)
        if not self.occupied and vote == EMPTY and self.deviation_mg < self.settings["off_mg"]:
            self._follow_drift(x, y, z, dt_ms)
        return self.occupied

    # --- steps ---------------------------------------------------------------------------

    def _calibrate(self, x, y, z):
        cal = self._cal
        cal[0] += x
        cal[1] += y
        cal[2] += z
        cal[3] += 1
        n = cal[3]
        if n >= self.settings["calibration_samples"]:
            self.baseline = (cal[0] / n, cal[1] / n, cal[2] / n)
            self._cal = None
            self.calibrations += 1
            self.occupied = False
            self._candidate = None

    def _track_ultrasonic(self, distance_cm):
        if not self.settings["us_on_cm"]:
            self.distance_cm = None
            return
        self.distance_cm = distance_cm
        if distance_cm is None:
            self._us_misses += 1
            # A sensor that never echoes is broken, not merely looking at a dark car roof.
            self.us_fault = self._us_misses >= 4 * self.settings["fault_after_misses"]
        else:
            self._us_misses = 0
            self.us_fault = False

    def _magnetic_vote(self):
        d = self.deviation_mg
        if d >= self.settings["on_mg"]:
            return CAR
        if d <= self.settings["off_mg"]:
            return EMPTY
        return ABSTAIN

    def _ultrasonic_vote(self):
        on = self.settings["us_on_cm"]
        if not on or self.distance_cm is None:
            return ABSTAIN
        if self.distance_cm < on:
            return CAR
        if self.distance_cm > on + self.settings["us_hyst_cm"]:
            return EMPTY
        return ABSTAIN

    @staticmethod
    def _fuse(mag, us):
        """Both sensors fitted: a car needs both (or one, the other abstaining); a clash holds."""
        if us == ABSTAIN:
            return mag
        if mag in (ABSTAIN, us):
            return us
        return ABSTAIN

    def _debounce(self, now_ms, vote):
        if vote == ABSTAIN:
            return  # inside the hysteresis band: keep the state and any running dwell
        wanted = vote == CAR
        if wanted == self.occupied:
            self._candidate = None
            return
        if self._candidate != wanted:
            self._candidate = wanted
            self._since_ms = now_ms
        dwell = self.settings["dwell_on_ms"] if wanted else self.settings["dwell_off_ms"]
        if now_ms - self._since_ms >= dwell:
            self.occupied = wanted
            self._candidate = None
            self.changes += 1

    def _follow_drift(self, x, y, z, dt_ms):
        tau_ms = self.settings["drift_tau_s"] * 1000
        if tau_ms <= 0 or dt_ms <= 0:
            return
        a = min(1.0, dt_ms / tau_ms)
        bx, by, bz = self.baseline
        self.baseline = (bx + a * (x - bx), by + a * (y - by), bz + a * (z - bz))
