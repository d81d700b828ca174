"""Tickets' QR payloads: issued for a session, checked back; forgeries and garbage refused."""

from __future__ import annotations

import base64
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.tickets import MAX_TEXT, TicketError, TicketSigner, issue, verify

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SESSION = "0190f1c2-3d4e-7a5b-8c6d-9e0f1a2b3c4d"


def test_a_ticket_names_its_session() -> None:
    text = issue(SESSION, KEY)
    assert text.startswith("T1.")
    assert SESSION in text
    assert verify(text, KEY) == SESSION
    assert len(text) <= 70  # small enough for a coarse QR module on thermal paper


def test_a_ticket_made_with_another_key_is_forged() -> None:
    with pytest.raises(TicketError) as caught:
        verify(issue(SESSION, OTHER_KEY), KEY)
    assert caught.value.problem == "forged"


def test_another_session_id_under_a_copied_signature_is_forged() -> None:
    """Reusing one ticket's MAC for another session (guessing ids) does not pass."""
    mac = issue(SESSION, KEY).rsplit(".", 1)[1]
    other = "0190f1c2-3d4e-7a5b-8c6d-9e0f1a2b3c4e"
    with pytest.raises(TicketError) as caught:
        verify(f"T1.{other}.{mac}", KEY)
    assert caught.value.problem == "forged"


def test_a_changed_character_in_the_signature_is_forged() -> None:
    text = issue(SESSION, KEY)
    last = "A" if text[-1] != "A" else "B"
    with pytest.raises(TicketError) as caught:
        verify(text[:-1] + last, KEY)
    assert caught.value.problem == "forged"


@pytest.mark.parametrize("text", [
    "", "hello", "T1.", "T1..", "T1.not-a-uuid.AAAA", f"T1.{SESSION}", f"T1.{SESSION}.short",
    f"T1.{SESSION}.{'A' * 26}.extra", "x" * (MAX_TEXT + 1), f"T1.{SESSION}.{'1' * 26}",
])
def test_garbage_is_not_a_ticket(text: str) -> None:
    with pytest.raises(TicketError) as caught:
        verify(text, KEY)
    assert caught.value.problem == "malformed"


def test_another_version_is_named_as_such() -> None:
    text = "T9" + issue(SESSION, KEY)[2:]
    with pytest.raises(TicketError) as caught:
        verify(text, KEY)
    assert caught.value.problem == "version"


def test_a_scanner_that_flips_case_still_reads_the_ticket() -> None:
    text = issue(SESSION, KEY)
    assert verify(text.swapcase(), KEY) == SESSION
    assert verify(f"  {text}\r\n", KEY) == SESSION


def test_keys_and_session_ids_are_checked_when_issuing() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        issue(SESSION, b"short")
    with pytest.raises(ValueError, match="not a session id"):
        issue("A-PLATE", KEY)


def test_the_signer_never_shows_its_key() -> None:
    signer = TicketSigner(KEY)
    assert signer.verify(signer.issue(SESSION)) == SESSION
    assert KEY.hex() not in repr(signer)
    assert "key" in repr(signer)


@given(st.uuids(), st.binary(min_size=32, max_size=32))
def test_every_issued_ticket_verifies_and_only_under_its_key(session: uuid.UUID, key: bytes
                                                             ) -> None:
    text = issue(str(session), key)
    assert verify(text, key) == str(session)
    if key != KEY:
        with pytest.raises(TicketError):
            verify(text, KEY)


@given(st.text(max_size=200))
def test_any_text_is_a_clear_error_never_a_crash(text: str) -> None:
    problem: str | None = None
    try:
        session = verify(text, KEY)
    except TicketError as e:
        problem = e.problem
    if problem is None:  # only a real ticket verifies; random text never carries a valid MAC
        assert issue(session, KEY).upper() == text.strip().upper()
    else:
        assert problem in ("malformed", "version", "forged")


@given(st.uuids(), st.binary(min_size=16, max_size=16))
def test_a_random_signature_is_refused(session: uuid.UUID, mac: bytes) -> None:
    text = f"T1.{session}.{base64.b32encode(mac).decode().rstrip('=')}"
    if text == issue(str(session), KEY):
        return  # 2^-128
    with pytest.raises(TicketError) as caught:
        verify(text, KEY)
    assert caught.value.problem == "forged"
