"""What a sign shows for its mode, offset, count and the lot's state (pure)."""

from __future__ import annotations

import pytest

from gateway.core.signs import Display, Scope, display


@pytest.mark.parametrize(("free", "offset", "text"), [
    (12, 0, "12"), (12, 5, "7"), (5, 5, "FULL"), (3, 5, "FULL"), (0, 0, "FULL"), (1, 0, "1")])
def test_auto_shows_the_free_count_less_the_offset_and_full_at_zero(
        free: int, offset: int, text: str) -> None:
    shown = display("auto", free=free, offset=offset, brightness=70)
    assert shown is not None
    assert shown.text == text
    assert shown.brightness == 70


def test_a_lot_sign_follows_the_lots_state_a_level_sign_does_not() -> None:
    assert display("auto", free=40, lot_state="full") == Display("full", None, 100)
    assert display("auto", free=40, lot_state="closed") == Display("closed", None, 100)
    assert display("auto", free=40, lot_state=None) == Display("count", 40, 100)


@pytest.mark.parametrize(("mode", "text", "brightness"), [
    ("full", "FULL", 60), ("closed", "CLOSED", 60), ("blank", "", 0), ("test", "8888", 100)])
def test_fixed_modes_ignore_the_count(mode: str, text: str, brightness: int) -> None:
    shown = display(mode, free=99, offset=0, brightness=60)  # type: ignore[arg-type]
    assert shown is not None
    assert (shown.text, shown.brightness) == (text, brightness)


def test_nothing_is_shown_in_auto_before_a_count_is_known() -> None:
    assert display("auto", free=None) is None
    assert display("test", free=None) is not None


@pytest.mark.parametrize("text", ["lot", "floor:-1", "zone:A", "type:ev", "floor:Level 2"])
def test_scopes_read_back_as_written(text: str) -> None:
    assert str(Scope.parse(text)) == text


@pytest.mark.parametrize("text", ["", "lots", "floor:", "level:1", "zone: A", "floor"])
def test_bad_scopes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a scope"):
        Scope.parse(text)
