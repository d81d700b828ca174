"""Plates of cars that never came in: pseudonymised under the lot's key when so configured,
kept a short time, and found by a person's request in either form."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from gateway.config import JournalConfig, Settings, load_settings
from gateway.core import events
from gateway.core.clock import FakeClock
from gateway.journal import Journal, JournalError
from gateway.journal.pseudonyms import PlatePseudonyms
from gateway.journal.reader import journal_files
from tests.conftest import EXAMPLE
from tests.controllers.test_lane import PERMIT, make_rig
from tests.journal.test_journal import rows

HOUR = 3600
DENIED = "BAD666"  # on the deny list of tests.controllers.test_lane's rig


def journal_bytes(path: Path) -> bytes:
    """The database file and its WAL, as on disk."""
    return b"".join(p.read_bytes() for p in journal_files(path)[:2] if p.exists())


def pseudonymising(path: Path) -> JournalConfig:
    return JournalConfig(path=path, maintenance_interval_s=3600, pseudonymise_refused=True,
                         plate_key_file=path.with_name("plate.key"))


async def test_a_refused_plate_is_journaled_only_as_its_pseudonym(
        journal_path: Path, clock: FakeClock) -> None:
    settings: Settings = load_settings(EXAMPLE, env={})
    async with await Journal.open(pseudonymising(journal_path), clock=clock) as journal:
        rig = make_rig(settings, journal, clock)
        async with rig.running():
            await rig.arrive(DENIED)
            assert rig.lane.state == "refused"
            await rig.back_off()
            await rig.arrive(PERMIT)  # let in: its plate stays text, for its session and fee
            await rig.drive_through()
        (violation,) = await rig.events("violation.detected")
        # Read while the WAL still holds the writes.
        written = journal_bytes(journal_path)
        assert journal_files(journal_path)[1].stat().st_size > 0
    key_file = journal_path.with_name("plate.key")
    pseudonym = PlatePseudonyms.from_file(key_file).of(DENIED)
    assert (violation["kind"], violation["plate"]) == ("deny_listed", pseudonym)
    assert DENIED.encode() not in written
    assert DENIED.encode() not in journal_bytes(journal_path)  # nor after the checkpoint
    assert pseudonym.encode() in written
    assert rows(journal_path, "SELECT plate FROM sessions") == [(PERMIT,)]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes() not in written  # the key itself is never journaled


def test_the_same_plate_gives_the_same_pseudonym_and_another_key_another(
        tmp_path: Path) -> None:
    lot = PlatePseudonyms.from_file(tmp_path / "lot.key")  # made on first use
    again = PlatePseudonyms.from_file(tmp_path / "lot.key")  # read back after a restart
    other = PlatePseudonyms.from_file(tmp_path / "other.key")
    assert lot.of(DENIED) == again.of(DENIED)
    assert lot.of(DENIED) != lot.of("BAD667")
    assert lot.of(DENIED) != other.of(DENIED)
    assert lot.of(DENIED).startswith("hmac-sha256:")
    assert len(lot.of(DENIED)) == 12 + 64
    assert "key" not in repr(lot).replace("<key>", "")


def test_a_key_given_by_the_operator_is_used_and_a_broken_one_refused(tmp_path: Path) -> None:
    given = tmp_path / "given.key"
    given.write_text("00" * 32 + "\n")
    assert (PlatePseudonyms.from_file(given).of("AB123CD")  # the example in docs/events.md
            == "hmac-sha256:cea88cef460e3f797771b8bcdfc949ec565490d325974e0f6865bbf8d4a6e4aa")
    broken = tmp_path / "broken.key"
    broken.write_text("not a key")
    with pytest.raises(JournalError, match="holds no plate key"):
        PlatePseudonyms.from_file(broken)


async def test_the_journal_does_not_open_without_its_key(journal_path: Path,
                                                          clock: FakeClock) -> None:
    journal_path.with_name("plate.key").write_text("0123")
    with pytest.raises(JournalError, match="holds no plate key"):
        await Journal.open(pseudonymising(journal_path), clock=clock)
    # Nothing was left locked: once the key is fixed, the journal opens.
    journal_path.with_name("plate.key").unlink()
    await (await Journal.open(pseudonymising(journal_path), clock=clock)).close()


def test_the_key_may_not_be_one_of_the_journals_files(journal_path: Path) -> None:
    with pytest.raises(ValueError, match="must not be the journal"):
        JournalConfig(path=journal_path, plate_key_file=Path(f"{journal_path}-wal"))


async def violation(j: Journal, clock: FakeClock, kind: events.ViolationKind, *,
                    plate: str | None, session: str | None = None, synced: bool = True) -> None:
    (seq,) = await j.commit([], [events.violation_detected(
        at=clock.now(), kind=kind, lane_id="entry-1", plate=plate, session_id=session)])
    if synced:
        await j.mark_acked([seq])


async def test_refused_plates_are_kept_only_their_short_retention(
        journal_path: Path, clock: FakeClock) -> None:
    settings = JournalConfig(path=journal_path, maintenance_interval_s=3600,
                             refused_retention_h=24, retention_days=30)
    async with await Journal.open(settings, clock=clock) as j:
        await violation(j, clock, "deny_listed", plate="OLDREF1")
        await violation(j, clock, "tailgating", plate="OLDREF2")  # at an exit, no session
        await violation(j, clock, "deny_listed", plate="UNSYNC1", synced=False)
        await violation(j, clock, "overstay", plate="INSIDE1", session="s-1")
        await violation(j, clock, "tailgating", plate=None)
        clock.advance(30 * HOUR)
        await violation(j, clock, "deny_listed", plate="NEWREF1")
        result = await j.prune()
        stored = rows(journal_path, "SELECT data FROM outbox ORDER BY seq")
        written = journal_bytes(journal_path)
    assert result["refused_expired"] == 2
    assert [json.loads(d).get("plate") for (d,) in stored] == [
        "UNSYNC1", "INSIDE1", None, "NEWREF1"]
    # Deleted means deleted: overwritten in the file, and gone from the truncated WAL.
    assert b"OLDREF1" not in written
    assert b"OLDREF2" not in written


async def test_a_request_finds_and_purges_a_plate_by_its_pseudonym(
        journal_path: Path, clock: FakeClock) -> None:
    async with await Journal.open(pseudonymising(journal_path), clock=clock) as j:
        await violation(j, clock, "deny_listed", plate=j.refused_plate(DENIED))
        await violation(j, clock, "deny_listed", plate=j.refused_plate("OTHER12"))
        held = await j.plate_records(DENIED)
        assert [e["data"]["plate"] for e in held["events"]] == [j.refused_plate(DENIED)]
        result = await j.purge_plate(DENIED, actor="cli:dpo")
        assert result["events"] == 1
        assert (await j.plate_records(DENIED))["events_total"] == 0
        assert (await j.plate_records("OTHER12"))["events_total"] == 1
