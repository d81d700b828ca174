"""How a sign reads in `sign list` and in `status`'s hardware table (one place for both)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def mode_text(row: Mapping[str, Any]) -> str:
    """`auto, keep 5 free`."""
    offset = row.get("offset") or 0
    return f"{row.get('mode', '?')}" + (f", keep {offset} free" if offset else "")


def showing(row: Mapping[str, Any]) -> str:
    """What the sign confirmed, or what it is being sent."""
    shown, wanted = row.get("showing"), row.get("wanted")
    if shown is None:
        return f"(sending {wanted!r})" if wanted is not None else "(nothing yet)"
    return repr(shown) if shown == wanted else f"{shown!r}, sending {wanted!r}"


def health(row: Mapping[str, Any]) -> str:
    """Whether it answers, and if not for how long and why."""
    answering = row.get("answering")
    if answering is None:
        return "not asked yet"
    if answering:
        return "yes"
    return f"NO for {row.get('silentS', 0):g} s ({row.get('lastError') or 'no answer'})"


def sign_line(row: Mapping[str, Any]) -> str:
    """One sign in `status`'s hardware table."""
    return f"{row.get('shows', '')}, {mode_text(row)}: {showing(row)}; answers: {health(row)}"
