"""gpiozero mock pins that the simulated world drives and listens to.

The world creates its pins in a :class:`~gpiozero.pins.mock.MockFactory` before the gateway
builds its devices on the same factory; gpiozero then hands the gateway these very pins:

* :class:`SimInputPin`: a loop detector output or a limit switch; the world sets its level,
  and the level survives the gateway setting the pin's pull when it claims it;
* :class:`SimRelayPin`: a relay output; the world hears every change at once;
* :class:`SimTriggerPin` / :class:`SimEchoPin`: an HC-SR04. A trigger pulse asks the bay's
  physics for a distance and answers with an echo whose length is exact (synthetic ticks),
  so a reading does not depend on how late a thread wakes; a dropout sends no echo at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPin, PinState  # type: ignore[import-untyped]

SPEED_OF_SOUND_MPS = 343.26  # gpiozero's figure
_MAX_STATES = 4096  # MockPin keeps every change; a day-long run would grow it without bound


class _BoundedStates(MockPin):  # type: ignore[misc]
    def _change_state(self, value: bool) -> bool:
        changed: bool = super()._change_state(value)
        if changed and len(self.states) > _MAX_STATES:
            del self.states[: _MAX_STATES // 2]
        return changed


class SimInputPin(_BoundedStates):
    """An input whose electrical level the world sets."""

    def __init__(self, factory: Any, info: Any) -> None:
        self.level = False
        super().__init__(factory, info)

    def set_level(self, level: bool) -> None:
        self.level = level
        if self._function != "input":
            return
        if level:
            self.drive_high()
        else:
            self.drive_low()

    def _set_pull(self, value: str) -> None:
        super()._set_pull(value)
        # A real loop detector's output does not change because the Pi set a pull resistor.
        self.set_level(self.level)


RelayListener = Callable[[bool], None]


class SimRelayPin(_BoundedStates):
    """An output whose every change the world hears (on the thread that switched it)."""

    def __init__(self, factory: Any, info: Any) -> None:
        super().__init__(factory, info)
        self.listeners: list[RelayListener] = []

    def _change_state(self, value: bool) -> bool:
        changed = super()._change_state(value)
        if changed and self._function == "output":
            for listener in list(self.listeners):
                listener(bool(value))
        return changed


class SimEchoPin(_BoundedStates):
    """An HC-SR04 echo line that can send a pulse of an exact length."""

    def __init__(self, factory: Any, info: Any) -> None:
        super().__init__(factory, info)
        self._tick: float | None = None

    def pulse(self, seconds: float) -> None:
        self.drive_high()
        self._tick = self._last_change + seconds
        try:
            self.drive_low()
        finally:
            self._tick = None

    def _change_state(self, value: bool) -> bool:
        if self._tick is None:
            return super()._change_state(value)
        if self._state == value:  # type: ignore[has-type]
            return False
        self._state = value
        self.states.append(PinState(self._tick - self._last_change, value))  # type: ignore[has-type]
        self._last_change = self._tick
        return True


DistanceProbe = Callable[[], "float | None"]
"""What the sensor sees now, in cm; None for no echo."""


class SimTriggerPin(_BoundedStates):
    """An HC-SR04 trigger: each pulse measures ``probe()`` and answers on the echo pin."""

    def __init__(self, factory: Any, info: Any, echo_pin: SimEchoPin,
                 probe: DistanceProbe) -> None:
        super().__init__(factory, info)
        self.echo_pin = echo_pin
        self.probe = probe
        self.pings = 0

    def _set_state(self, value: bool) -> None:
        super()._set_state(value)
        if not value:
            return
        self.pings += 1
        distance_cm = self.probe()
        if distance_cm is not None:
            self.echo_pin.pulse(2.0 * distance_cm / 100.0 / SPEED_OF_SOUND_MPS)


class SimPins:
    """The world's pins in one factory, which the gateway's devices must share."""

    def __init__(self, factory: MockFactory | None = None) -> None:
        self.factory = factory or MockFactory()

    def input(self, pin: int) -> SimInputPin:
        result: SimInputPin = self.factory.pin(pin, pin_class=SimInputPin)
        return result

    def relay(self, pin: int) -> SimRelayPin:
        result: SimRelayPin = self.factory.pin(pin, pin_class=SimRelayPin)
        return result

    def ultrasonic(self, trigger: int, echo: int, probe: DistanceProbe) -> SimTriggerPin:
        echo_pin = self.factory.pin(echo, pin_class=SimEchoPin)
        result: SimTriggerPin = self.factory.pin(trigger, pin_class=SimTriggerPin,
                                                 echo_pin=echo_pin, probe=probe)
        return result
