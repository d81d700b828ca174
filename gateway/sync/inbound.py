"""What comes down from the backend: the queue in front of the handler, and pushed config.

`InboundQueue` and `FloodWatch` keep a flood of junk from drowning a signed command: see
their docstrings.

Config is tariffs, permits, reservations and the deny list. An update arrives as
`{"version": N, "data": ...}` on a retained MQTT topic or from an HTTP pull. It is
validated in full before anything changes; a valid one is stored as a new version in the
journal's config cache together with its `config.applied` event, in one transaction; an
invalid one is reported with `config.applied` (outcome `rejected`, with the errors) and
the version in force stays. A retained message comes again on every reconnect, so a
version already in force, or already rejected, is passed over quietly. An update is
bounded before it is parsed (size, and nesting depth: a 2 KB document can nest a thousand
levels), and its version is a JSON integer from 1 to 2^53-1, the range every JSON consumer
holds exactly (no bool, no string, no float).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

import structlog
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictInt,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from gateway.core import events
from gateway.core.clock import Clock
from gateway.core.events import ConfigKind, ConfigSource
from gateway.core.records import Alarm
from gateway.core.rights import RIGHTS
from gateway.core.tariff import RateTable
from gateway.journal import Journal, PutConfig
from gateway.sync.mqtt import Message

log = structlog.get_logger(__name__)

MAX_ERRORS = 20  # reported per rejected update; the rest are counted
MAX_UPDATE_BYTES = 8 * 1024 * 1024  # a deny list of ~100,000 plates fits
MAX_REMEMBERED_REJECTIONS = 1000
MAX_DEPTH = 32  # nesting of an update's JSON; the deepest real one (tariffs) needs 7
MAX_VERSION = 2**53 - 1  # the largest integer every JSON consumer holds exactly
FLOOD_ALARM = "sync.command_flood"
FLOOD_REPORT_S = 10.0  # at most one aggregate report of dropped messages per this time


async def to_the_end(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` to its end even if the caller is cancelled meanwhile; the cancellation goes
    on once it is done. For a message in hand: a half-handled command would have spent its
    nonce unaudited, a half-written report would be written again."""
    task = asyncio.create_task(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


class InboundQueue:
    """Inbound messages waiting for the handler, in two lanes, so junk cannot crowd out a command.

    A command that `CommandHandler.screen` found signed with our key and not yet used waits in
    the signed lane, which the handler empties first; one copy per nonce, so replays of a
    captured command cannot fill it. Everything else (config, unsigned commands) waits in the
    open lane. A message past its lane's bound is dropped and counted; `FloodWatch` reports the
    count. The queue outlives a connection: what arrived before a link drop is handled after the
    reconnect.
    """

    def __init__(self, size: int, signed_size: int) -> None:
        self._open: deque[Message] = deque()
        self._signed: deque[tuple[Message, str]] = deque()
        self._nonces: set[str] = set()  # those in the signed lane
        self._size = size
        self._signed_size = signed_size
        self._ready = asyncio.Event()
        self._dropping = asyncio.Event()
        self.dropped = 0  # since start
        self.dropped_signed = 0  # of them, signed commands (the signed lane was full)

    def __len__(self) -> int:
        return len(self._open) + len(self._signed)

    def put(self, message: Message, nonce: str | None = None) -> bool:
        """Queue a message, `nonce` that of a command screened as signed; False: dropped."""
        if nonce is not None and nonce not in self._nonces:
            if len(self._signed) < self._signed_size:
                self._signed.append((message, nonce))
                self._nonces.add(nonce)
                self._ready.set()
                return True
            self.dropped_signed += 1
        elif len(self._open) < self._size:
            self._open.append(message)
            self._ready.set()
            return True
        self.dropped += 1
        self._dropping.set()
        return False

    async def get(self) -> Message:
        """The next message: a signed command first."""
        while not self:
            self._ready.clear()
            await self._ready.wait()
        if self._signed:
            message, nonce = self._signed.popleft()
            self._nonces.discard(nonce)
            return message
        return self._open.popleft()

    async def dropped_past(self, seen: int) -> None:
        """Return once more than `seen` messages have been dropped."""
        while self.dropped <= seen:
            self._dropping.clear()
            await self._dropping.wait()


class FloodWatch:
    """Reports the messages `InboundQueue` dropped, in aggregate, and keeps the flood alarm.

    The first drop is reported at once and raises `sync.command_flood`; while drops go on, at
    most one report per `interval_s`; an interval with none clears the alarm (so does the first
    quiet spell after a start: one left from before a restart). A report is one audit row and
    one `command.executed` (outcome `dropped`) with the count, whatever the flood's size: a
    flood must not turn into a flood of journal writes. A report that cannot be written is
    tried again with the next one; nothing dropped goes uncounted.
    """

    def __init__(self, queue: InboundQueue, journal: Journal,
                 report: Callable[[int, int], Awaitable[None]],
                 interval_s: float = FLOOD_REPORT_S) -> None:
        self.queue = queue
        self.journal = journal
        self.interval_s = interval_s
        self._report = report
        self._reported = 0  # of queue.dropped
        self._reported_signed = 0
        self._flooding = True

    async def run(self) -> None:
        """Until cancelled; what was dropped since the last report is reported on the way out
        (a stop, a lost link), so nothing dropped goes unaudited."""
        try:
            while True:
                if self.queue.dropped == self._reported:
                    if self._flooding:
                        await self._calm()
                    await self.queue.dropped_past(self._reported)
                await to_the_end(self.report())
                await asyncio.sleep(self.interval_s)
        finally:
            await to_the_end(self.report())

    async def report(self) -> None:
        """Report what was dropped since the last report, and raise the alarm."""
        count = self.queue.dropped - self._reported
        signed = self.queue.dropped_signed - self._reported_signed
        if count == 0:
            return
        try:
            await self.journal.raise_alarm(Alarm(
                FLOOD_ALARM, "warning",
                f"inbound MQTT flood: {count} messages dropped unread; signed commands are"
                " still handled first", {"dropped": count, "signedDropped": signed},
                component="sync"))
            await self._report(count, signed)
        except Exception:  # the journal failed: counted still, reported with the next one
            log.exception("sync.flood_report_failed", count=count)
            return
        self._flooding = True
        self._reported += count
        self._reported_signed += signed

    async def _calm(self) -> None:
        try:
            await self.journal.clear_alarm(
                FLOOD_ALARM, f"no inbound message dropped for {self.interval_s:g} s")
        except Exception:
            log.exception("sync.flood_clear_failed")
            return
        self._flooding = False


class Tariffs(RootModel[dict[Annotated[str, Field(min_length=1, max_length=64)], RateTable]]):
    @model_validator(mode="after")
    def _not_empty(self) -> Tariffs:
        if not self.root:
            raise ValueError("at least one tariff is required")
        return self


class _Update(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: StrictInt = Field(ge=1, le=MAX_VERSION)
    data: Any


_VALIDATORS: dict[str, TypeAdapter[Any]] = {"tariffs": TypeAdapter(Tariffs), **RIGHTS}
KINDS: tuple[ConfigKind, ...] = (
    "tariffs", "permits", "reservations", "deny_list", "permit_pools", "recurring_reservations")

Listener = Callable[[str, int, Any], None]


def validate(kind: str, data: Any) -> Any:
    """The validated model of one kind's data; raises pydantic's ValidationError."""
    return _VALIDATORS[kind].validate_python(data)


def _errors(e: ValidationError) -> list[str]:
    out = []
    for err in e.errors(include_input=False, include_url=False)[:MAX_ERRORS]:
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        out.append(f"{where}: {err['msg']}"[:2000])
    if e.error_count() > MAX_ERRORS:
        out.append(f"... and {e.error_count() - MAX_ERRORS} more errors")
    return out


class ConfigInbox:
    """Validates and stores pushed config; tells listeners what is now in force."""

    def __init__(self, journal: Journal, clock: Clock) -> None:
        self.journal = journal
        self.clock = clock
        self._rejected: set[tuple[str, int, str]] = set()  # (kind, version, payload hash)
        self._listeners: list[Listener] = []
        self.applied = 0
        self.rejected = 0
        self.ignored = 0  # an unknown kind, a version not newer, a rejection seen before

    def subscribe(self, listener: Listener) -> None:
        """`listener(kind, version, model)` runs after each applied update."""
        self._listeners.append(listener)

    async def current(self, kind: str) -> tuple[int, Any] | None:
        """The version in force and its validated model, or None if none was ever pushed."""
        row = await self.journal.config_current(kind)
        if row is None:
            return None
        return row.version, validate(kind, json.loads(row.payload))

    async def apply(self, kind: str, raw: bytes, source: ConfigSource) -> str:
        """Apply one update: `applied`, `rejected` or `ignored`. Bad input never raises."""
        if kind not in _VALIDATORS:
            log.warning("sync.config_unknown_kind", kind=kind[:64], source=source)
            self.ignored += 1
            return "ignored"
        typed_kind: ConfigKind = kind  # type: ignore[assignment]
        if len(raw) > MAX_UPDATE_BYTES:
            return await self._reject(typed_kind, 0, source, [
                f"update of {len(raw)} bytes is over the {MAX_UPDATE_BYTES} byte limit"],
                (kind, 0, hashlib.sha256(raw).hexdigest()))
        if _nested_deeper(raw, MAX_DEPTH):
            return await self._reject(typed_kind, 0, source, [
                f"update nests deeper than {MAX_DEPTH} levels, or its brackets do not balance"],
                (kind, 0, hashlib.sha256(raw).hexdigest()))
        try:
            update = _Update.model_validate_json(raw)
        except ValidationError as e:
            version = _loose_version(raw)
            key = (kind, version, hashlib.sha256(raw).hexdigest())
            return await self._reject(typed_kind, version, source, _errors(e), key)
        key = (kind, update.version, hashlib.sha256(raw).hexdigest())
        current = await self.journal.config_current(kind)
        if current is not None and update.version <= current.version:
            if update.version < current.version:
                log.info("sync.config_stale", kind=kind, version=update.version,
                         in_force=current.version)
            self.ignored += 1
            return "ignored"
        try:
            model = validate(kind, update.data)
        except ValidationError as e:
            return await self._reject(typed_kind, update.version, source, _errors(e), key)
        payload = _canonical(kind, model)
        now = self.clock.now()
        await self.journal.commit(
            (PutConfig(kind, update.version, payload, source, events.rfc3339(now)),),
            (events.config_applied(at=now, kind=typed_kind, version=update.version,
                                   outcome="applied", source=source),))
        self.applied += 1
        log.info("sync.config_applied", kind=kind, version=update.version, source=source)
        for listener in self._listeners:
            try:
                listener(kind, update.version, model)
            except Exception:
                log.exception("sync.config_listener_failed", kind=kind)
        return "applied"

    async def _reject(self, kind: ConfigKind, version: int, source: ConfigSource,
                      errors: list[str], key: tuple[str, int, str]) -> str:
        if key in self._rejected:
            self.ignored += 1
            return "ignored"
        if len(self._rejected) >= MAX_REMEMBERED_REJECTIONS:
            self._rejected.clear()
        self._rejected.add(key)
        self.rejected += 1
        log.warning("sync.config_rejected", kind=kind, version=version, source=source,
                    errors=errors[:3])
        await self.journal.commit((), (events.config_applied(
            at=self.clock.now(), kind=kind, version=version, outcome="rejected", source=source,
            errors=errors or ["invalid update"]),))
        return "rejected"


def _loose_version(raw: bytes) -> int:
    """The version an unusable update claims, for the report; 0 when it has none."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return 0
    version = value.get("version") if isinstance(value, dict) else None
    if isinstance(version, bool) or not isinstance(version, int):
        return 0
    return version if 0 <= version <= MAX_VERSION else 0


# After its escapes are gone, a JSON string: its brackets do not nest.
_STRING = re.compile(rb'"[^"]*"')
_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET = bytes(range(256)).translate(None, b"[]{}")


def _nested_deeper(raw: bytes, limit: int) -> bool:
    """Whether the JSON text nests arrays and objects more than `limit` deep, or its brackets
    do not balance.

    Done on the text with C-speed bytes operations, before any parser recurses into it
    (json.loads raises RecursionError on a thousand levels): the strings go, the brackets
    stay, and each round takes the innermost pairs out. Text that is not JSON may be judged
    wrongly; it is rejected anyway.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = _STRING.sub(b"", text).translate(_SQUARE, _NOT_BRACKET)
    for _ in range(limit):
        inner = brackets.replace(b"[]", b"")
        if inner == brackets:
            break
        brackets = inner
    return bool(brackets)


def _canonical(kind: str, model: Any) -> str:
    dumped = _VALIDATORS[kind].dump_python(model, mode="json", exclude_none=True)
    return json.dumps(dumped, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
