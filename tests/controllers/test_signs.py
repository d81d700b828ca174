"""The sign board: each sign shows its scope's free count, updated on a change within 500 ms,
refreshed, with its mode and offset; a silent sign raises `sign.unreachable` and clears it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
from parking_sim.signs import SignLine

from gateway.config import SignConfig
from gateway.controllers.signs import SignBoard, setting_key
from gateway.core.availability import Availability, Place, tally
from gateway.core.records import Alarm
from gateway.core.signs import Display
from gateway.drivers.modbus import Counters
from gateway.drivers.signs import SignTimeout


class FakeSign:
    """Records what it is shown; `dead` makes it time out."""

    def __init__(self, sign_id: str) -> None:
        self.sign_id = sign_id
        self.counters = Counters()
        self.shown: list[Display] = []
        self.dead = False

    async def show(self, display: Display) -> None:
        await asyncio.sleep(0)
        if self.dead:
            raise SignTimeout("no answer in time")
        self.shown.append(display)

    async def close(self) -> None:
        pass


class Alarms:
    def __init__(self) -> None:
        self.raised: list[Alarm] = []
        self.cleared: list[str] = []

    async def raise_alarm(self, alarm: Alarm) -> None:
        self.raised.append(alarm)

    async def clear_alarm(self, alarm_id: str, message: str = "cleared") -> None:
        self.cleared.append(alarm_id)


def config(sign_id: str, shows: str = "lot", **kw: Any) -> SignConfig:
    return SignConfig(id=sign_id, kind="ascii", port="/dev/null", address=1, shows=shows, **kw)


def lot(free_by_floor: dict[str, int], *, state: str = "open", taken: int = 2) -> Availability:
    """Floors of `free + taken` sensed bays each, zone A, the last bay of each an EV bay."""
    places = []
    for floor, free in free_by_floor.items():
        states = ["free"] * free + ["occupied"] * taken
        places += [Place(floor, "A", "ev" if i == len(states) - 1 else "regular",
                         s)  # type: ignore[arg-type]
                   for i, s in enumerate(states)]
    return Availability("lot", "gw", datetime(2026, 3, 2, tzinfo=UTC), state,  # type: ignore[arg-type]
                        tally(places, inside=0))


async def until(check: Callable[[], bool], timeout_s: float = 3.0) -> float:
    """Seconds until `check()` holds."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout_s:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)
    return time.monotonic() - began


@pytest.fixture
async def running() -> AsyncIterator[Callable[..., Any]]:
    tasks: list[asyncio.Task[None]] = []

    def start(configs: Iterable[SignConfig], **kw: Any) -> tuple[SignBoard, dict[str, FakeSign],
                                                                   Alarms]:
        configs = list(configs)
        signs = {c.id: FakeSign(c.id) for c in configs}
        alarms = Alarms()
        board = SignBoard(configs, signs, alarms=alarms, **kw)
        tasks.append(asyncio.create_task(board.run()))
        return board, signs, alarms

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def texts(sign: FakeSign) -> list[str]:
    return [d.text for d in sign.shown]


async def test_each_sign_shows_the_free_count_of_its_scope(running: Any) -> None:
    board, signs, _ = running([config("entrance"), config("level-1", "floor:1"),
                               config("zone-a", "zone:A"), config("ev", "type:ev")])
    board.show_availability(lot({"0": 10, "1": 4}))
    await until(lambda: all(s.shown for s in signs.values()))
    # 14 free; floor 1: 4; zone A: both floors; each floor's EV bay is occupied.
    assert [texts(signs[k])[-1] for k in ("entrance", "level-1", "zone-a", "ev")] == [
        "14", "4", "14", "FULL"]


async def test_a_change_reaches_the_sign_within_500_ms_and_only_changes_are_sent(
        running: Any) -> None:
    board, signs, _ = running([config("entrance"), config("level-0", "floor:0")])
    board.show_availability(lot({"0": 10, "1": 4}))
    await until(lambda: bool(signs["level-0"].shown))
    board.show_availability(lot({"0": 10, "1": 3}))  # floor 1 changes, floor 0 does not
    took = await until(lambda: texts(signs["entrance"])[-1] == "13")
    assert took < 0.5
    await asyncio.sleep(0.05)
    assert texts(signs["level-0"]) == ["10"]


async def test_offset_and_the_lots_state(running: Any) -> None:
    board, signs, _ = running([config("entrance", offset=5), config("level-0", "floor:0")])
    board.show_availability(lot({"0": 7}))
    await until(lambda: bool(signs["entrance"].shown and signs["level-0"].shown))
    assert texts(signs["entrance"]) == ["2"]
    board.show_availability(lot({"0": 4}))
    await until(lambda: texts(signs["entrance"])[-1] == "FULL")
    board.show_availability(lot({"0": 4}, state="closed"))
    await until(lambda: texts(signs["entrance"])[-1] == "CLOSED")
    assert texts(signs["level-0"])[-1] == "4"  # a level sign inside still counts


async def test_a_sign_is_refreshed_periodically(running: Any) -> None:
    board, signs, _ = running([config("entrance", refresh_s=1)])
    board.show_availability(lot({"0": 3}))
    await until(lambda: len(signs["entrance"].shown) >= 2, timeout_s=2.5)
    assert texts(signs["entrance"])[:2] == ["3", "3"]


async def test_a_technicians_mode_is_shown_at_once(running: Any) -> None:
    board, signs, _ = running([config("entrance", brightness=40)])
    board.show_availability(lot({"0": 3}))
    await until(lambda: bool(signs["entrance"].shown))
    board.set_mode("entrance", "test", 0)
    await until(lambda: texts(signs["entrance"])[-1] == "8888")
    assert signs["entrance"].shown[-1].brightness == 100
    board.set_mode("entrance", "auto", 2)
    await until(lambda: texts(signs["entrance"])[-1] == "1")
    board.set_mode("entrance", "blank", 2)
    await until(lambda: texts(signs["entrance"])[-1] == "")


async def test_a_silent_sign_raises_its_alarm_and_clears_it_when_it_answers(
        running: Any) -> None:
    board, signs, alarms = running([config("entrance", alarm_after_s=0.2, retries=0),
                                    config("level-0", "floor:0")], retry_s=0.05)
    signs["entrance"].dead = True
    board.show_availability(lot({"0": 3}))
    await until(lambda: bool(alarms.raised))
    alarm = alarms.raised[0]
    assert alarm.alarm_id == "sign.unreachable:entrance"
    assert (alarm.severity, alarm.component, alarm.details["sign"]) == (
        "warning", "signs", "entrance")
    assert board.summary()[0]["answering"] is False
    assert texts(signs["level-0"]) == ["3"]  # the other sign is not held up
    signs["entrance"].dead = False
    await until(lambda: "sign.unreachable:entrance" in alarms.cleared)
    assert board.summary()[0]["answering"] is True
    assert texts(signs["entrance"]) == ["3"]
    assert board.summary()[0]["showing"] == "3"


def test_a_technicians_mode_is_restored_and_a_bad_one_ignored() -> None:
    configs = [config("a", offset=1), config("b", mode="full")]
    signs = {c.id: FakeSign(c.id) for c in configs}
    board = SignBoard(configs, signs, saved={setting_key("a"): {"mode": "closed", "offset": 4},
                                             setting_key("b"): {"mode": "sideways"}})
    assert (board.state("a").mode, board.state("a").offset) == ("closed", 4)
    assert (board.state("b").mode, board.state("b").offset) == ("full", 0)


async def test_the_board_drives_a_real_sign_on_a_pty() -> None:
    line = SignLine(addresses=[3])
    port = await line.start()
    board = SignBoard.from_settings([SignConfig(id="entrance", kind="ascii", port=port,
                                                address=3, brightness=90)])
    task = asyncio.create_task(board.run())
    try:
        board.show_availability(lot({"0": 21}))
        await until(lambda: line.text(3) == "21")
        board.show_availability(lot({"0": 20}))
        took = await until(lambda: board.summary()[0]["showing"] == "20")  # acknowledged
        assert took < 0.5
        assert line.text(3) == "20"
        assert line.shown[3].brightness == 90
        row = board.summary()[0]
        assert (row["showing"], row["answering"], row["counters"]["replies"]) == ("20", True, 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await board.close()
        await line.close()
