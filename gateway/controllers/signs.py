"""The sign board: every free-space sign shows the free count of its scope, kept current.

It listens to the lot's availability (`AvailabilityFeed.listen`: each new document, coalesced
over 100 ms), works out what each sign should show (`gateway.core.signs.display`) and sends
it when it differs from what the sign last confirmed: a change reaches a sign within the
feed's window plus one frame. Each sign also gets its picture again every `refresh_s`, so a
sign that lost power shows the count again without anyone noticing it was dark.

Each sign has a task of its own, so a dead sign's timeouts never hold up another. A sign that
does not confirm an update is tried again (`retries`), then every few seconds; once it has
been silent for `alarm_after_s` the alarm ``sign.unreachable:<sign>`` (warning, component
"signs") is raised, and cleared when it confirms again.

The mode and offset of each sign come from its config, or from a technician's `sign mode`
(the setting ``sign.mode:<sign>``, restored here at start).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import structlog

from gateway.config import SignConfig
from gateway.core.availability import Availability, Counts, Where
from gateway.core.records import Alarm
from gateway.core.signs import MAX_OFFSET, Display, Scope, SignMode, display
from gateway.drivers import AlarmLatch, AlarmSink
from gateway.drivers.signs import Sign, SignError, open_signs

log = structlog.get_logger(__name__)

RETRY_S = 2.0  # between tries at a sign that stopped answering


def setting_key(sign_id: str) -> str:
    """The journal setting that keeps a technician's mode for the sign."""
    return f"sign.mode:{sign_id}"


def alarm_id(sign_id: str) -> str:
    return f"sign.unreachable:{sign_id}"


@dataclass
class SignState:
    """One sign: its settings in force and what it is known to show."""

    config: SignConfig
    sign: Sign
    mode: SignMode
    offset: int
    shown: Display | None = None  # the last picture the sign confirmed
    answering: bool | None = None  # None: not asked yet
    silent_since: float | None = None  # loop time of its first unconfirmed update in a row
    last_error: str | None = None
    updates: int = 0  # pictures confirmed
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def scope(self) -> Scope:
        return self.config.scope

    @property
    def where(self) -> Where:
        """The availability cells its scope covers."""
        scope = self.scope
        if scope.kind == "floor":
            return Where(floor=scope.name)
        if scope.kind == "zone":
            return Where(zone=scope.name)
        return Where(bay_type=scope.name)  # the lot's: None, every cell


class SignBoard:
    """Run `run()` as a part of the daemon; feed it with `show_availability`."""

    def __init__(self, configs: Sequence[SignConfig], signs: Mapping[str, Sign], *,
                 alarms: AlarmSink | None = None, saved: Mapping[str, Any] | None = None,
                 retry_s: float = RETRY_S) -> None:
        self.retry_s = retry_s
        self.states: dict[str, SignState] = {}
        for config in configs:
            mode, offset = _restored((saved or {}).get(setting_key(config.id)), config)
            self.states[config.id] = SignState(config, signs[config.id], mode, offset)
        self._availability: Availability | None = None
        self._alarms = AlarmLatch(alarms, "signs")

    @classmethod
    def from_settings(cls, configs: Sequence[SignConfig], *, alarms: AlarmSink | None = None,
                      saved: Mapping[str, Any] | None = None) -> SignBoard:
        return cls(configs, open_signs(configs), alarms=alarms, saved=saved)

    # --- what the signs should show ---

    def show_availability(self, now: Availability) -> None:
        """The feed's listener: each sign whose picture changes is woken. Never blocks."""
        self._availability = now
        for state in self.states.values():
            if self.wanted(state) != state.shown:
                state.wake.set()

    def wanted(self, state: SignState) -> Display | None:
        """What the sign should show now; None while no count is known (nothing is sent)."""
        free: int | None = None
        lot_state: str | None = None
        now = self._availability
        if now is not None:
            where = state.where
            free = sum((c for cell, c in now.cells.items() if where.matches(cell)),
                       Counts()).free
            lot_state = now.lot_state if state.scope.kind == "lot" else None
        return display(state.mode, free=free, offset=state.offset,
                       brightness=state.config.brightness, lot_state=lot_state)

    def state(self, sign_id: str) -> SignState:
        """KeyError for a sign not on the board."""
        return self.states[sign_id]

    def set_mode(self, sign_id: str, mode: SignMode, offset: int) -> None:
        """A technician's mode (journaled by the caller); the sign is updated at once."""
        state = self.states[sign_id]
        state.mode, state.offset = mode, offset
        state.wake.set()
        log.info("signs.mode", sign=sign_id, mode=mode, offset=offset)

    # --- running ---

    async def run(self) -> None:
        """One task per sign, until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            for state in self.states.values():
                tasks.create_task(self._drive(state), name=f"sign:{state.config.id}")

    async def close(self) -> None:
        self._alarms.close()
        for state in self.states.values():
            with contextlib.suppress(Exception):
                await state.sign.close()

    async def _drive(self, state: SignState) -> None:
        refresh = True  # the first picture goes out whatever the sign shows
        while True:
            state.wake.clear()
            wanted = self.wanted(state)
            if wanted is not None and (refresh or wanted != state.shown):
                await self.update(state, wanted)
            wait_s = state.config.refresh_s if state.answering is not False else min(
                self.retry_s, state.config.refresh_s)
            try:
                async with asyncio.timeout(wait_s):
                    await state.wake.wait()
                refresh = state.answering is False  # a silent sign is tried on any change
            except TimeoutError:
                refresh = True

    async def update(self, state: SignState, wanted: Display) -> bool:
        """Show `wanted` on the sign, with its retries; whether it confirmed."""
        error: SignError | None = None
        for _ in range(state.config.retries + 1):
            try:
                await state.sign.show(wanted)
            except SignError as e:
                error = e
                continue
            self._confirmed(state, wanted)
            return True
        assert error is not None
        self._unconfirmed(state, error)
        return False

    def _confirmed(self, state: SignState, shown: Display) -> None:
        sign_id = state.config.id
        if state.answering is False:
            log.info("signs.answering_again", sign=sign_id)
        state.shown, state.answering, state.silent_since, state.last_error = shown, True, None, None
        state.updates += 1
        self._alarms.clear(alarm_id(sign_id), f"sign {sign_id} answers again")

    def _unconfirmed(self, state: SignState, error: SignError) -> None:
        now = asyncio.get_running_loop().time()
        sign_id, config = state.config.id, state.config
        if state.answering is not False:
            log.warning("signs.not_answering", sign=sign_id, port=config.port,
                        error=str(error))
        state.answering, state.last_error = False, str(error)
        state.shown = None  # it may show anything now: send the picture again when it answers
        if state.silent_since is None:
            state.silent_since = now
        if now - state.silent_since >= config.alarm_after_s:
            self._alarms.set(Alarm(
                alarm_id(sign_id), "warning",
                f"sign {sign_id} ({config.kind} at {config.port}, address {config.station})"
                f" has not answered for over {config.alarm_after_s:g} s ({error}); it may"
                " show a stale count",
                {"sign": sign_id, "port": config.port, "address": config.station,
                 "error": str(error)},
                component="signs"))

    # --- status ---

    def summary(self) -> list[dict[str, Any]]:
        """Each sign for `status` and `sign list`: its scope, mode, what it shows, whether it
        answers."""
        loop_now = asyncio.get_running_loop().time()
        rows = []
        for sign_id, state in self.states.items():
            config, wanted = state.config, self.wanted(state)
            rows.append({
                "signId": sign_id, "kind": config.kind, "port": config.port,
                "address": config.station, "shows": config.shows, "mode": state.mode,
                "offset": state.offset, "brightness": config.brightness,
                "showing": None if state.shown is None else state.shown.text,
                "wanted": None if wanted is None else wanted.text,
                "answering": state.answering, "lastError": state.last_error,
                "silentS": None if state.silent_since is None
                else round(loop_now - state.silent_since, 1),
                "updates": state.updates, "counters": state.sign.counters.as_dict(),
            })
        return rows


def _restored(saved: Any, config: SignConfig) -> tuple[SignMode, int]:
    """A technician's mode and offset kept in the journal, else the config's. A value this
    version cannot read is logged and left at the config's."""
    if saved is None:
        return config.mode, config.offset
    if (isinstance(saved, dict) and saved.get("mode") in get_args(SignMode)
            and isinstance(saved.get("offset"), int)
            and 0 <= saved["offset"] <= MAX_OFFSET):
        return saved["mode"], saved["offset"]
    log.error("signs.setting_unreadable", sign=config.id, value=repr(saved)[:100])
    return config.mode, config.offset
