"""Remote commands from the backend: authenticated, replay-proof, audited, then executed.

On the wire a command is `{"payload": "<JSON text>", "signature": "<hex>"}`, the
signature being HMAC-SHA256 of the payload text's UTF-8 bytes under the
gateway's key. Signing the exact text needs no canonical JSON. The payload is
`{"commandId", "command", "args", "issuedAt", "nonce", "issuedBy"?, "replyTo"?}`.

A command is accepted only if it is small enough, its signature matches, it
was issued within the time window, its nonce was never seen, and its `replyTo`
(if any) is a topic under the gateway's `replies`. Nonces are kept in the
journal's config cache (kind `command_nonces`) for the window, so a restart
does not open a replay door. Every command, accepted or rejected, is audited
and reported as `command.executed`; nothing rejected ever reaches the lot.
Messages a flood made the gateway drop are audited in aggregate
(`report_dropped`), not one by one.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from gateway.core import events
from gateway.core.clock import Clock
from gateway.core.events import CommandOutcome
from gateway.core.operations import LaneMode, LotControl, LotState, OperationRefused
from gateway.journal import Audit, Journal, PutConfig
from gateway.sync.topics import check_reply_to

log = structlog.get_logger(__name__)

NONCE_KIND = "command_nonces"
Ident = Annotated[str, Field(min_length=1, max_length=128)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignedCommand(_Model):
    payload: Annotated[str, Field(min_length=2)]
    signature: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]


class Command(_Model):
    commandId: Ident
    command: Annotated[str, Field(min_length=1, max_length=64)]
    args: dict[str, Any] = Field(default_factory=dict)
    issuedAt: events.Rfc3339Time
    nonce: Annotated[str, Field(min_length=16, max_length=128)]
    issuedBy: Ident | None = None
    replyTo: Annotated[str, Field(min_length=1, max_length=256)] | None = None


class OpenGateArgs(_Model):
    laneId: Ident
    reason: Annotated[str, Field(min_length=1, max_length=500)] = "remote command"


class SetLotStateArgs(_Model):
    state: LotState


class SetLaneModeArgs(_Model):
    laneId: Ident
    mode: LaneMode


class ResendArgs(_Model):
    fromSequence: StrictInt = Field(ge=1, le=2**63 - 1)  # SQLite's integers


class PlateArgs(_Model):
    plate: Annotated[str, Field(min_length=1, max_length=32)]


class NoArgs(_Model):
    pass


COMMANDS: dict[str, type[_Model]] = {
    "open_gate": OpenGateArgs,
    "set_lot_state": SetLotStateArgs,
    "set_lane_mode": SetLaneModeArgs,
    "request_status": NoArgs,
    "resend": ResendArgs,
    "privacy_purge": PlateArgs,
    "privacy_export": PlateArgs,
    "reset_passback": PlateArgs,
}


def sign(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode("utf-8"), hashlib.sha256).hexdigest()


def signed_command(key: bytes, command: Mapping[str, Any]) -> bytes:
    """The wire form of a command (what the backend, its simulator and the tests send)."""
    payload = json.dumps(command, separators=(",", ":"), sort_keys=True)
    return json.dumps({"payload": payload, "signature": sign(key, payload)}).encode()


@dataclass(frozen=True, slots=True)
class Reply:
    topic: str | None  # None: the default reply topic
    payload: dict[str, Any]


class Rejected(Exception):
    """The command is refused before it reaches the lot; the message says why."""


class CommandHandler:
    """Authenticates and runs commands against the lot (a LotControl)."""

    def __init__(
        self,
        *,
        key: bytes | None,
        journal: Journal,
        clock: Clock,
        control: LotControl,
        window_s: float,
        max_bytes: int,
        replies: str,
        resend: Callable[[int], Awaitable[dict[str, Any]]],
        sync_status: Callable[[], Awaitable[dict[str, Any]]],
    ) -> None:
        self._key = key
        self.journal = journal
        self.clock = clock
        self.control = control
        self.window_s = window_s
        self.max_bytes = max_bytes
        self.replies = replies  # the topic replies go to, or one under it that a command names
        self._resend = resend
        self._sync_status = sync_status
        self._nonces: dict[str, float] = {}  # nonce -> expiry (epoch seconds)
        self._nonce_version = 0
        self.accepted = 0
        self.rejected = 0

    async def load(self) -> None:
        """Read back the nonces seen within the window (before the first command)."""
        row = await self.journal.config_current(NONCE_KIND)
        if row is None:
            return
        self._nonce_version = row.version
        try:
            saved = json.loads(row.payload)
            now = self.clock.now().timestamp()
            self._nonces = {str(n): float(t) for n, t in saved.items() if float(t) > now}
        except (ValueError, AttributeError, TypeError):
            log.error("sync.nonces_unreadable", version=row.version)

    def screen(self, raw: bytes) -> str | None:
        """The nonce of a command signed with our key and not used yet, else None.

        Only an HMAC and a parse, no journal: cheap enough to sort every inbound message
        before it is queued, so a flood of junk cannot crowd out a signed command.
        """
        if len(raw) > self.max_bytes:
            return None
        try:
            signed = SignedCommand.model_validate_json(raw)
            if not self._signed_by_us(signed):
                return None
            nonce = Command.model_validate_json(signed.payload).nonce
        except ValidationError:
            return None
        return None if nonce in self._nonces else nonce

    def _signed_by_us(self, signed: SignedCommand) -> bool:
        return self._key is not None and hmac.compare_digest(
            sign(self._key, signed.payload), signed.signature.lower())

    async def handle(self, raw: bytes) -> Reply:
        """Handle one message from the commands topic; never raises on bad input."""
        command: Command | None = None
        authenticated = False
        try:
            if len(raw) > self.max_bytes:
                raise Rejected(f"command of {len(raw)} bytes is over the {self.max_bytes}"
                               " byte limit")
            signed = _parse(SignedCommand, raw, "not a signed command")
            if self._key is None:
                raise Rejected("remote commands are disabled on this gateway (no HMAC key)")
            if not self._signed_by_us(signed):
                raise Rejected("bad signature")
            authenticated = True
            command = _parse(Command, signed.payload.encode(), "malformed command")
            if command.replyTo is not None:
                self._check_reply_to(command.replyTo)
            self._check_time(command.issuedAt)
            await self._use_nonce(command.nonce)
            args_model = COMMANDS.get(command.command)
            if args_model is None:
                raise Rejected(f"unknown command {command.command!r}")
            args = _parse_args(args_model, command.args)
        except Rejected as e:
            return await self._finish(raw, command, "rejected", str(e), authenticated, {})
        try:
            result = await self._execute(command, args)
        except OperationRefused as e:
            return await self._finish(raw, command, "failed", str(e), True, {})
        except Exception as e:  # a bug in the lot must not stop the command loop
            log.exception("sync.command_crashed", command=command.command)
            return await self._finish(raw, command, "failed", f"internal error: {e!r}", True, {})
        return await self._finish(raw, command, "accepted", None, True, result)

    def _check_reply_to(self, topic: str) -> None:
        try:
            check_reply_to(self.replies, topic)
        except ValueError as e:
            raise Rejected(str(e)) from None

    def _check_time(self, issued_at: datetime) -> None:
        skew = abs((self.clock.now() - issued_at).total_seconds())
        if skew > self.window_s:
            raise Rejected(f"issuedAt is {skew:.0f} s away from the gateway's clock, outside"
                           f" the {self.window_s:.0f} s window")

    async def _use_nonce(self, nonce: str) -> None:
        now = self.clock.now().timestamp()
        self._nonces = {n: t for n, t in self._nonces.items() if t > now}
        if nonce in self._nonces:
            raise Rejected("nonce already used (replay)")
        self._nonces[nonce] = now + 2 * self.window_s  # both sides of the window
        self._nonce_version += 1
        # Durable before the command runs: a crash now cannot let it be replayed.
        await self.journal.commit((PutConfig(
            NONCE_KIND, self._nonce_version, json.dumps(self._nonces, sort_keys=True), "local",
            events.rfc3339(self.clock.now())),))

    async def _execute(self, command: Command, args: _Model) -> dict[str, Any]:
        actor = f"backend:{command.commandId}"
        if isinstance(args, OpenGateArgs):
            await self.control.open_gate(args.laneId, reason=args.reason, actor=actor)
        elif isinstance(args, SetLotStateArgs):
            await self.control.set_lot_state(args.state, actor=actor)
        elif isinstance(args, SetLaneModeArgs):
            await self.control.set_lane_mode(args.laneId, args.mode, actor=actor)
        elif isinstance(args, ResendArgs):
            return await self._resend(args.fromSequence)
        elif isinstance(args, PlateArgs):
            if command.command == "privacy_purge":
                return await self.control.purge_plate(args.plate, actor=actor)
            if command.command == "reset_passback":
                return await self.control.reset_passback(args.plate, actor=actor)
            return await self.control.export_plate(args.plate)
        elif command.command == "request_status":
            return {"lot": await self.control.status(), "sync": await self._sync_status()}
        return {}

    async def _finish(self, raw: bytes, command: Command | None, outcome: CommandOutcome,
                      reason: str | None, authenticated: bool, result: dict[str, Any]
                      ) -> Reply:
        if command is not None:
            command_id, name = command.commandId, command.command
        else:
            command_id = "unparsed:" + hashlib.sha256(raw).hexdigest()[:16]
            name = "unparsed"
        if outcome == "accepted":
            self.accepted += 1
        else:
            self.rejected += 1
        issued_by = command.issuedBy if command is not None and authenticated else None
        details = {"authenticated": authenticated, "sizeBytes": len(raw)}
        now = self.clock.now()
        log_fn = log.info if outcome == "accepted" else log.warning
        log_fn("sync.command", command_id=command_id, command=name, outcome=outcome,
               reason=reason)
        short = None if reason is None else reason[:2000]
        await self.journal.commit(
            (Audit(events.rfc3339(now), f"backend:{issued_by or 'unknown'}", f"command.{name}",
                   command_id, short, json.dumps({"outcome": outcome, **details})),),
            (events.command_executed(at=now, command_id=command_id, command=name,
                                     outcome=outcome, reason=short, issued_by=issued_by,
                                     details=details),))
        topic = None
        if command is not None and authenticated and command.replyTo is not None:
            with contextlib.suppress(Rejected):  # rejected for it: the reply goes to `replies`
                self._check_reply_to(command.replyTo)
                topic = command.replyTo
        reply: dict[str, Any] = {"commandId": command_id, "command": name, "outcome": outcome}
        if short is not None:
            reply["reason"] = short
        if result:
            reply["result"] = result
        return Reply(topic, reply)

    async def report_dropped(self, count: int, signed: int) -> None:
        """Audit, in one row and one `command.executed` (outcome `dropped`), `count` inbound
        messages a flood made the gateway drop unread; `signed` of them were signed commands."""
        now = self.clock.now()
        command_id = f"dropped:{events.rfc3339(now)}"
        reason = (f"{count} inbound messages dropped unread: more came than the gateway could"
                  " take (a flood)")
        details = {"count": count, "signed": signed}
        log.warning("sync.inbound_dropped", count=count, signed=signed)
        await self.journal.commit(
            (Audit(events.rfc3339(now), "backend:unknown", "command.dropped", command_id,
                   reason, json.dumps({"outcome": "dropped", **details})),),
            (events.command_executed(at=now, command_id=command_id, command="unparsed",
                                     outcome="dropped", reason=reason, details=details),))


def _parse(model: type[_Model], raw: bytes, what: str) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise Rejected(f"{what}: {where}: {first['msg']}") from None


def _parse_args(model: type[_Model], args: dict[str, Any]) -> _Model:
    try:
        return model.model_validate(args)
    except ValidationError as e:
        first = e.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise Rejected(f"bad args: {where}: {first['msg']}") from None
