"""What the running daemon lets a technician (CLI over the control socket) and the backend
(authenticated commands) do to the lot. The daemon's app implements :class:`LotControl`; the
control socket server and the sync command handler only call it.

Every method that changes the lot is audited by the implementation, with the ``actor`` given
(``"cli:<unix user>"`` or ``"backend:<command id>"``) and the reason.
Methods raise :class:`OperationRefused` with a message fit for the person who asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

from gateway.core.signs import SignMode

LaneMode = Literal["auto", "locked_open", "locked_closed"]
Direction = Literal["entry", "exit"]
LotState = Literal["open", "full", "closed"]


class OperationRefused(Exception):
    """The lot cannot do what was asked (unknown lane, barrier fault, ...); the message says why."""


class LotControl(Protocol):
    async def status(self) -> dict[str, Any]:
        """Lanes, bay counts, lot state, sync backlog and active alarms, as JSON-ready values."""
        ...

    async def open_gate(self, lane_id: str, *, reason: str, actor: str) -> None:
        """A manual vend: raise the barrier for one vehicle, audited with the reason."""
        ...

    async def set_lane_mode(self, lane_id: str, mode: LaneMode, *, actor: str) -> None: ...

    async def set_lot_state(self, state: LotState, *, actor: str) -> None: ...

    async def set_bay_service(self, bay_id: str, in_service: bool, *, actor: str) -> None: ...

    async def set_level_count(self, level: str, count: int, *, actor: str) -> dict[str, Any]:
        """A technician's recount of a level counted at its ramps: its count set to `count`
        (0..capacity), audited with the error corrected. Returns level, count, previous and
        error (previous - count)."""
        ...

    async def level_counts(self) -> dict[str, Any]:
        """The levels counted at their ramps: count, capacity, free, drift, and per ramp the
        crossings in and out, backouts, glitches and the loops' states."""
        ...

    async def alarms(self) -> list[dict[str, Any]]:
        """The active alarms, oldest first (kept across restarts until cleared or acknowledged)."""
        ...

    async def acknowledge_alarm(self, alarm_id: str, *, actor: str) -> dict[str, Any]:
        """A technician takes note of an active alarm: it is cleared and audited."""
        ...

    async def open_sessions(self) -> list[dict[str, Any]]: ...

    async def recent_plates(self, limit: int = 50) -> list[dict[str, Any]]: ...

    async def purge_plate(self, plate: str, *, actor: str) -> dict[str, Any]:
        """Delete what the gateway holds about a plate on its owner's request (closed
        sessions and their payments, synced events, reads in memory, crops); audited without
        the plate. Returns what was removed, and what was kept (an open session, events the
        backend has not received)."""
        ...

    async def export_plate(self, plate: str) -> dict[str, Any]:
        """What the gateway holds about a plate: a subject-access request."""
        ...

    def watch_sensors(self) -> AsyncIterator[dict[str, Any]]:
        """For ``sensors watch``: first every sensor's state, then readings and bay service
        changes as they come; ends when the caller stops."""
        ...

    # --- anti-passback ---

    async def reset_passback(self, plate: str, *, actor: str) -> dict[str, Any]:
        """Clear one credential's anti-passback (its car left unseen): the plate's open session
        no longer keeps it out; its next entry ends that session as a lost ticket and opens a
        new one. Audited, and kept across a restart. Refused when the plate is not inside."""
        ...

    # --- free-space signs ---

    async def signs(self) -> list[dict[str, Any]]:
        """Each sign: its scope, mode and offset, what it shows, whether it answers."""
        ...

    async def set_sign_mode(self, sign_id: str, mode: SignMode, *, offset: int | None,
                            actor: str) -> dict[str, Any]:
        """Set a sign's mode (and its offset, if given), audited and kept across restarts;
        returns the sign as `signs` shows it."""
        ...
