"""The lane state machine with fake loops, barrier and camera, and a real journal."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import deque
from datetime import timedelta
from typing import Any

import pytest

from gateway.config import LotConfig, Settings, load_settings
from gateway.controllers.sessions import SessionBook
from gateway.core.access import Access
from gateway.core.clock import FakeClock
from gateway.core.rights import DenyEntry, Permit, Reservation
from gateway.journal import Journal, JournalFullError
from tests.conftest import EXAMPLE
from tests.controllers.lanes import Lot, Rig, settle

PERMIT = "PERMIT1"
VISITOR = "VIS1234"


@pytest.fixture
def settings() -> Settings:
    return load_settings(EXAMPLE, env={})


def make_rig(settings: Settings, journal: Journal, clock: FakeClock, *, lane: str = "entry-north",
             lot_policy: dict[str, Any] | None = None, lot: Lot | None = None,
             access: Access | None = None) -> Rig:
    policy = LotConfig(**(lot_policy or {}))
    access = access or Access(policy)
    access.load("permits", [Permit(permitId="p-1", plates=(PERMIT,))])
    access.load("deny_list", [DenyEntry(plate="BAD666", reason="stolen")])
    sessions = SessionBook(settings, journal, access, clock)
    config = next(c for c in settings.lanes if c.id == lane)
    return Rig(config, journal, clock, access, sessions, lot or Lot())


async def test_a_permit_holder_enters_and_the_barrier_closes_behind_the_car(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    rig = make_rig(settings, journal, clock)
    async with rig.running():
        await rig.arrive(PERMIT)
        assert rig.barrier.commands == ["raise"]
        assert rig.lane.state == "open"
        await rig.drive_through()
        assert rig.barrier.commands == ["raise", "lower"]
        assert rig.lane.state == "idle"
    started = await rig.events("session.started")
    assert [(s["identifiedVehicle"]["plate"], s["right"]) for s in started] == [
        (PERMIT, {"kind": "permit", "reference": "p-1"})]
    assert await rig.types() == ["gate.opened", "session.started", "gate.closed"]
    assert len(rig.lane.open_latencies_ms) == 1


async def test_the_barrier_never_closes_while_the_safety_loop_is_occupied(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    rig = make_rig(settings, journal, clock)
    async with rig.running():
        await rig.arrive(PERMIT)
        rig.safety.set(True)
        rig.closing.set(True)
        await settle()
        rig.closing.set(False)  # the closing loop clears while a car is still under the arm
        await settle()
        assert rig.barrier.commands == ["raise"]
        rig.clock.advance(60)  # nor does the pass timeout close on it
        rig.lane.post("timeout", "pass")
        await settle()
        assert rig.barrier.commands == ["raise"]
        rig.safety.set(False)
        rig.arming.set(False)
        await settle()
        assert rig.barrier.commands == ["raise", "lower"]


async def test_a_car_reaching_the_safety_loop_while_closing_reopens_the_barrier(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    rig = make_rig(settings, journal, clock)
    rig.barrier.move = lambda position: None  # type: ignore[method-assign]  # slow barrier
    async with rig.running():
        await rig.arrive(PERMIT)
        rig.barrier.position = "up"
        await rig.drive_through()
        assert rig.lane.state == "closing"
        rig.safety.set(True)
        await settle()
        assert rig.barrier.commands == ["raise", "lower", "raise"]
    reasons = [e["reason"] for e in await rig.events("gate.opened")]
    assert reasons == ["decision", "safety_reopen"]


async def test_a_second_car_under_one_opening_is_tailgating_and_still_gets_a_session(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    rig = make_rig(settings, journal, clock)
    async with rig.running():
        await rig.arrive(PERMIT)
        rig.safety.set(True)
        await settle()
        rig.arming.set(False)
        await settle()
        rig.camera.show("TAIL999")
        rig.arming.set(True)  # the follower noses in while the first is under the arm
        await settle()
        rig.closing.set(True)
        await settle()
        rig.closing.set(False)  # the first car is through; the second is on the safety loop
        await settle()
        assert rig.barrier.commands == ["raise"]
        rig.arming.set(False)
        rig.closing.set(True)
        await settle()
        rig.safety.set(False)
        rig.closing.set(False)
        await settle()
        assert rig.barrier.commands == ["raise", "lower"]
        assert rig.lane.tailgates == 1
    violations = await rig.events("violation.detected")
    assert [(v["kind"], v.get("plate")) for v in violations] == [("tailgating", "TAIL999")]
    plates = [s["identifiedVehicle"]["plate"] for s in await rig.events("session.started")]
    assert plates == [PERMIT, "TAIL999"]
    assert [a.alarm_id for a in journal.active_alarms()] == ["lane.tailgating:entry-north"]


async def test_a_follower_read_of_the_leaders_plate_is_not_the_followers(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    """The camera still shows the car ahead as the follower noses in: its plate must not go to
    the tailgater's session too (that car would hold two sessions, one never closed)."""
    rig = make_rig(settings, journal, clock)
    async with rig.running():
        await rig.arrive(PERMIT)
        rig.safety.set(True)
        await settle()
        rig.arming.set(False)
        await settle()
        rig.arming.set(True)  # the follower, the leader's plate still in view
        await settle()
        rig.closing.set(True)
        await settle()
        rig.closing.set(False)
        await settle()
        rig.arming.set(False)
        rig.closing.set(True)
        await settle()
        rig.safety.set(False)
        rig.closing.set(False)
        await settle()
        assert rig.lane.tailgates == 1
    started = await rig.events("session.started")
    assert [s.get("identifiedVehicle", {}).get("plate") for s in started] == [PERMIT, None]
    violations = await rig.events("violation.detected")
    assert [(v["kind"], v.get("plate")) for v in violations] == [("tailgating", None)]


async def test_a_tailgater_too_close_to_be_seen_apart_gets_its_own_plate_not_the_next_cars(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    """A tailgater less than a metre behind: the loops see one long vehicle, the arming loop
    never clears between them, so only the frames kept once the leader reached the barrier
    show it. They show the car queued behind it too, later: the earliest other plate is the
    tailgater's (the newest named the queued car, which got the tailgater's session)."""
    rig = make_rig(settings, journal, clock)
    async with rig.running():
        await rig.arrive(PERMIT)
        rig.safety.set(True)  # the leader reaches the barrier: frames are kept from now
        await settle()
        rig.camera.show("TAIL999")  # the leader's plate out of view, the tailgater's in it
        await asyncio.sleep(0.9)
        rig.camera.show("NEXT111")  # the tailgater under the arm, the next car in view
        await asyncio.sleep(0.9)
        clock.advance(1.0)
        rig.closing.set(True)  # the leader's front
        await settle()
        clock.advance(1.0)
        rig.arming.set(False)  # the tailgater's tail: 2.5 m in 0.5 s to the safety loop's end
        await settle()
        clock.advance(0.5)
        rig.safety.set(False)  # 5 m/s * 1.5 s + 1 m: 8.5 m, two vehicles
        await settle()
        rig.closing.set(False)
        await settle()
        assert (rig.lane.passages, rig.lane.tailgates) == (2, 1)
    started = await rig.events("session.started")
    assert [s["identifiedVehicle"]["plate"] for s in started] == [PERMIT, "TAIL999"]


async def test_a_deny_listed_plate_is_refused_and_reported(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    rig = make_rig(settings, journal, clock)
    async with rig.running():
        await rig.arrive("BAD666")
        assert rig.barrier.commands == []
        assert rig.lane.state == "refused"
        await rig.back_off()
        assert rig.lane.state == "idle"
    (violation,) = await rig.events("violation.detected")
    assert (violation["kind"], violation["plate"]) == ("deny_listed", "BAD666")


async def test_a_full_lot_refuses_visitors_but_admits_permit_holders(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    rig = make_rig(settings, journal, clock, lot=Lot(free=0))
    async with rig.running():
        await rig.arrive(VISITOR)
        assert rig.barrier.commands == []
        assert rig.lane.recent[-1].decision == "lot_full"
        await rig.back_off()
        await rig.arrive(PERMIT)
        assert rig.barrier.commands == ["raise"]


async def test_a_plate_one_confusable_away_from_a_permit_is_the_permit(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    rig = make_rig(settings, journal, clock, lot=Lot(free=0))
    async with rig.running():
        await rig.arrive("PERM1T1")  # I read as 1
        assert rig.barrier.commands == ["raise"]
        await rig.drive_through()
    (started,) = await rig.events("session.started")
    assert started["identifiedVehicle"]["plate"] == PERMIT


async def test_an_unreadable_plate_goes_to_the_fallback_and_a_manual_vend_is_audited(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    rig = make_rig(settings, journal, clock)
    async with rig.running():
        await rig.arrive(None)
        assert rig.lane.state == "refused"
        assert rig.lane.recent[-1].decision == "unreadable"
        await rig.lane.vend("intercom: driver has a ticket", "cli:alice")
        await settle()
        assert rig.barrier.commands == ["raise"]
        await rig.drive_through()
    (opened,) = await rig.events("gate.opened")
    assert opened["reason"] == "manual"
    (started,) = await rig.events("session.started")
    assert "identifiedVehicle" not in started
    with contextlib.closing(sqlite3.connect(journal.path)) as db:
        audit = db.execute("SELECT actor, action, reason FROM audit").fetchall()
    assert audit == [("cli:alice", "gate.open", "intercom: driver has a ticket")]


@pytest.mark.parametrize(("mode", "opens", "sessions", "violations"), [
    ("hard", False, 1, ["anti_passback"]),
    ("soft", True, 1, ["anti_passback"]),
    ("off", True, 2, []),
])
async def test_anti_passback(settings: Settings, journal: Journal, clock: FakeClock, mode: str,
                             opens: bool, sessions: int, violations: list[str]) -> None:
    rig = make_rig(settings, journal, clock, lot_policy={"anti_passback": mode})
    async with rig.running():
        await rig.arrive(VISITOR)
        await rig.drive_through()
        await rig.arrive(VISITOR)  # in again, with no exit in between
        assert (rig.barrier.commands[-1] == "raise") is opens
        if opens:
            await rig.drive_through()
    assert len(await rig.events("session.started")) == sessions
    assert [v["kind"] for v in await rig.events("violation.detected")] == violations


async def test_timed_anti_passback_clears_after_its_window(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    rig = make_rig(settings, journal, clock,
                   lot_policy={"anti_passback": "timed", "passback_minutes": 60})
    async with rig.running():
        await rig.arrive(VISITOR)
        await rig.drive_through()
        clock.advance(30 * 60)
        await rig.arrive(VISITOR)
        assert rig.barrier.commands == ["raise", "lower"]  # refused inside the window
        await rig.back_off()
        clock.advance(31 * 60)
        await rig.arrive(VISITOR)
        assert rig.barrier.commands[-1] == "raise"
        await rig.drive_through()
    ended = await rig.events("session.ended")
    assert [e["exitReason"] for e in ended] == ["lost_ticket"]  # the stale stay, closed
    assert len(await rig.events("session.started")) == 2


async def exit_rig(settings: Settings, journal: Journal, clock: FakeClock,
                   **kw: Any) -> tuple[Rig, Rig]:
    entry = make_rig(settings, journal, clock, **kw)
    exit_ = make_rig(settings, journal, clock, lane="exit", access=entry.lane.access,
                     lot=kw.get("lot"))
    return entry, exit_


async def test_a_paid_visitor_leaves_with_the_tariff_fee(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    entry, exit_ = await exit_rig(settings, journal, clock)
    async with entry.running():
        await entry.arrive(VISITOR)
        await entry.drive_through()
    clock.advance(2 * 3600)
    stay = entry.lane.access.stay_of(VISITOR)
    assert stay is not None
    async with exit_.running():
        await exit_.arrive(VISITOR)
        assert exit_.lane.recent[-1].decision == "unpaid"  # online, not paid: held
        await exit_.back_off()
        await entry.lane.sessions.record_payment(
            payment_id="pay-1", session_id=stay.session_id, amount_minor=450, currency="EUR",
            method="card", source="pay_station")
        clock.advance(300)  # walks back to the car
        await exit_.arrive(VISITOR)
        assert exit_.barrier.commands == ["raise"]
        await exit_.drive_through()
    (ended,) = await exit_.events("session.ended")
    assert ended["exitReason"] == "normal"
    # The fee is the tariff's for the whole stay, 2 h 05 min: 2.50 + 3 x 1.00. The payment of
    # 4.50 covered the fee when it was made (2 h), so the walk back to the car is not charged.
    assert ended["fee"]["amountMinor"] == 550
    assert [(t["type"], t["amount"]["amountMinor"]) for t in ended["financialTransactions"]] == [
        ("payment", 450)]
    assert entry.lane.access.stay_of(VISITOR) is None


async def test_offline_an_unpaid_visitor_is_let_out_and_the_fee_recorded_uncollected(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    entry, exit_ = await exit_rig(settings, journal, clock, lot=Lot(is_online=False))
    async with entry.running():
        await entry.arrive(VISITOR)
        await entry.drive_through()
    clock.advance(3 * 3600)
    async with exit_.running():
        await exit_.arrive(VISITOR)
        assert exit_.barrier.commands == ["raise"]
        await exit_.drive_through()
    (ended,) = await exit_.events("session.ended")
    assert ended["exitReason"] == "unable_to_collect"
    (uncollected,) = ended["financialTransactions"]
    assert uncollected["type"] == "uncollected"
    assert uncollected["amount"]["amountMinor"] == ended["fee"]["amountMinor"] > 0


async def test_a_permit_holder_leaves_free_and_a_plate_with_no_entry_pays_lost_ticket(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    entry, exit_ = await exit_rig(settings, journal, clock)
    async with entry.running():
        await entry.arrive(PERMIT)
        await entry.drive_through()
    clock.advance(5 * 3600)
    async with exit_.running():
        await exit_.arrive(PERMIT)
        await exit_.drive_through()
        await exit_.arrive("NOENTRY1")
        await exit_.drive_through()
    permit, lost = await exit_.events("session.ended")
    assert (permit["fee"]["amountMinor"], permit["exitReason"]) == (0, "normal")
    assert (lost["fee"]["amountMinor"], lost["exitReason"]) == (3000, "lost_ticket")
    assert lost["identifiedVehicle"]["plate"] == "NOENTRY1"


async def test_locked_modes(settings: Settings, journal: Journal, clock: FakeClock) -> None:
    rig = make_rig(settings, journal, clock)
    async with rig.running():
        await rig.lane.set_mode("locked_closed", "cli:bob")
        await settle()
        await rig.arrive(PERMIT)
        assert rig.barrier.commands == []
        await rig.back_off()
        await rig.lane.set_mode("locked_open", "cli:bob")
        await settle()
        assert rig.barrier.commands == ["raise"]
        await rig.arrive(VISITOR)
        await rig.drive_through()
        assert rig.barrier.commands == ["raise"]  # stays up
        await rig.lane.set_mode("auto", "cli:bob")
        await settle()
        assert rig.barrier.commands == ["raise", "lower"]
    plates = [s["identifiedVehicle"]["plate"] for s in await rig.events("session.started")]
    assert plates == [VISITOR]  # kept even while locked open


async def test_a_barrier_fault_takes_the_lane_out_of_order_with_an_alarm(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    rig = make_rig(settings, journal, clock)
    async with rig.running():
        rig.barrier.faulted = True
        rig.barrier.move("fault")
        await settle()
        assert rig.lane.status()["outOfOrder"]
        assert "lane.out_of_order:entry-north" in [a.alarm_id for a in journal.active_alarms()]
        await rig.arrive(PERMIT)
        assert rig.barrier.commands == []
        rig.barrier.faulted = False
        rig.barrier.move("down")
        await settle()
        assert rig.lane.state == "idle"
        assert not journal.active_alarms()


async def test_a_car_that_backs_away_after_the_barrier_opened_gets_no_session(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    rig = make_rig(settings, journal, clock)
    async with rig.running():
        await rig.arrive(PERMIT)
        await rig.back_off()
        clock.advance(31)
        rig.lane.post("timeout", "pass")
        await settle()
        assert rig.barrier.commands == ["raise", "lower"]
    assert await rig.events("session.started") == []
    (closed,) = await rig.events("gate.closed")
    assert closed["reason"] == "timeout"


async def test_a_full_disk_while_the_barrier_opens_keeps_the_lane_and_its_records(
        settings: Settings, journal: Journal, clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal refuses every write while the barrier rises and the car goes through: the
    lane knows the barrier is up, closes behind the car, raises an alarm, and writes the
    records, in order, once the journal takes them again."""
    rig = make_rig(settings, journal, clock)
    full = True
    commit = journal.commit

    async def full_disk(changes: Any = (), events: Any = ()) -> list[int]:
        if full:
            raise JournalFullError("database or disk is full")
        return await commit(changes, events)

    monkeypatch.setattr(journal, "commit", full_disk)
    async with rig.running():
        await rig.arrive(PERMIT)
        assert rig.barrier.commands == ["raise"]
        assert rig.lane.state == "open"  # not idle: the barrier is up
        assert "lane.journal:entry-north" in [a.alarm_id for a in journal.active_alarms()]
        await rig.drive_through()
        assert rig.barrier.commands == ["raise", "lower"]
        assert rig.lane.state == "idle"
        assert await rig.events("session.started") == []
        full = False
        rig.lane.post("timeout", "retry")
        await settle()
        assert rig.lane.machine.unwritten == deque()
    lane_types = [t for t in await rig.types() if not t.startswith("alarm.")]
    assert lane_types == ["gate.opened", "session.started", "gate.closed"]
    (started,) = await rig.events("session.started")
    assert started["identifiedVehicle"]["plate"] == PERMIT
    assert rig.lane.access.stay_of(PERMIT) is not None
    assert "lane.journal:entry-north" not in [a.alarm_id for a in journal.active_alarms()]


def test_reservation_window_and_grace() -> None:
    from datetime import UTC, datetime

    access = Access(LotConfig(reservation_grace_minutes=10))
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    access.load("reservations", [Reservation(
        reservationId="r-1", plate="RES1", start=start, end=start + timedelta(hours=2))])
    early = access.entry("RES1", at=start - timedelta(minutes=11), free_bays=50)
    assert (early.allow, early.reason) == (True, "visitor")
    on_time = access.entry("RES1", at=start - timedelta(minutes=9), free_bays=0)
    assert (on_time.allow, on_time.reason, on_time.right_ref) == (True, "reservation", "r-1")
    # A pending reservation holds a bay against visitors.
    assert access.entry("OTHER1", at=start, free_bays=1).reason == "lot_full"
    assert access.entry("OTHER1", at=start, free_bays=2).allow


def test_an_ambiguous_plate_is_never_accepted() -> None:
    access = Access(LotConfig())
    access.load("permits", [Permit(permitId="a", plates=("AB1234",)),
                            Permit(permitId="b", plates=("AB1235",))])
    decision = access.entry("AB123X", at=_now(), free_bays=50)
    assert (decision.allow, decision.reason, decision.fallback) == (False, "ambiguous", True)


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


async def test_stays_beyond_their_reservation_or_payment_are_reported_once(
        settings: Settings, journal: Journal, clock: FakeClock) -> None:
    rig = make_rig(settings, journal, clock, lot_policy={"reservation_grace_minutes": 10})
    now = clock.now()
    rig.lane.access.load("reservations", [Reservation(
        reservationId="r-9", plate="BOOKED1", start=now, end=now + timedelta(hours=1))])
    sessions = rig.lane.sessions
    async with rig.running():
        await rig.arrive("BOOKED1")
        await rig.drive_through()
        await rig.arrive(VISITOR)
        await rig.drive_through()
    visitor = rig.lane.access.stay_of(VISITOR)
    assert visitor is not None
    await sessions.record_payment(payment_id="p-1", session_id=visitor.session_id,
                                  amount_minor=250, currency="EUR", method="card",
                                  source="pay_station")  # valid for the 15 min grace
    clock.advance(50 * 60)
    assert await sessions.check_overstays() == 1  # the payment ran out; the booking has not
    clock.advance(30 * 60)  # 1 h 20 min: past the booking's end and its 10 min grace
    assert await sessions.check_overstays() == 1
    assert await sessions.check_overstays() == 0
    kinds = [(v["kind"], v["plate"]) for v in await rig.events("violation.detected")]
    assert kinds == [("unpaid_overstay", VISITOR), ("overstay", "BOOKED1")]
