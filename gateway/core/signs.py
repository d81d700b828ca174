"""What a free-space count sign shows: pure, so the sign board and its tests need no sign.

A sign has a scope (the whole lot, a floor, a zone or a bay type: `lot`, `floor:<name>`,
`zone:<name>`, `type:<bay type>`) and a mode:

- ``auto``: the free bays of its scope less the sign's offset (the "keep 5 free" practice:
  the last few bays are left for the permit holders and the drivers already looking), never
  below 0, and ``FULL`` at 0. A lot sign also follows the lot's state: ``FULL`` while the lot
  is full (the entry refuses visitors, the sign must not invite them) and ``CLOSED`` while an
  operator has closed it. A floor, zone or type sign inside the lot shows its count all the
  same: drivers already inside still look for a bay;
- ``full``, ``closed``: that word, whatever the count (a level closed for cleaning);
- ``blank``: nothing (the sign dark, at brightness 0);
- ``test``: every segment lit at full brightness (``8888``), for commissioning.

A picture is a :class:`Display`; the drivers turn it into their wire format (an ASCII text
or a Modbus sign's count, mode and brightness registers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

SignMode = Literal["auto", "full", "closed", "blank", "test"]
ScopeKind = Literal["lot", "floor", "zone", "type"]
Shown = Literal["count", "full", "closed", "blank", "test"]

SIGN_MODES: tuple[str, ...] = get_args(SignMode)
SCOPE_KINDS: tuple[str, ...] = get_args(ScopeKind)
TEXTS: dict[Shown, str] = {"full": "FULL", "closed": "CLOSED", "blank": "", "test": "8888"}
MAX_OFFSET = 10_000
_SCOPE = re.compile(r"^(lot)$|^(floor|zone|type):(\S.{0,62})$")


@dataclass(frozen=True, slots=True)
class Scope:
    """The bays whose free count a sign shows."""

    kind: ScopeKind
    name: str | None = None  # the floor, zone or bay type; None for the lot

    @classmethod
    def parse(cls, text: str) -> Scope:
        """`lot`, `floor:<name>`, `zone:<name>` or `type:<bay type>`; ValueError otherwise."""
        found = _SCOPE.match(text)
        if found is None:
            raise ValueError(f"{text!r} is not a scope: lot, floor:<name>, zone:<name> or"
                             " type:<bay type>")
        if found.group(1):
            return cls("lot")
        kind: ScopeKind = found.group(2)  # type: ignore[assignment]
        return cls(kind, found.group(3))

    def __str__(self) -> str:
        return self.kind if self.name is None else f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class Display:
    """One picture on a sign: what it shows, the number when it is a count, how bright."""

    shown: Shown
    count: int | None
    brightness: int  # percent, 0-100

    @property
    def text(self) -> str:
        """The characters an ASCII sign shows: the count, or FULL, CLOSED, 8888, nothing."""
        return str(self.count) if self.shown == "count" else TEXTS[self.shown]


def display(mode: SignMode, *, free: int | None, offset: int = 0, brightness: int = 100,
            lot_state: str | None = None) -> Display | None:
    """What a sign in `mode` shows for its scope's `free` bays; None while the count is not
    known yet (auto mode before the first availability: the sign keeps what it shows).

    `lot_state` is the lot's (open, full, closed) for a sign whose scope is the lot, else None.
    """
    if mode == "blank":
        return Display("blank", None, 0)
    if mode == "test":
        return Display("test", None, 100)
    if mode in ("full", "closed"):
        return Display(mode, None, brightness)
    if lot_state == "closed":
        return Display("closed", None, brightness)
    if free is None:
        return None
    left = max(0, free - offset)
    if left == 0 or lot_state == "full":
        return Display("full", None, brightness)
    return Display("count", left, brightness)
