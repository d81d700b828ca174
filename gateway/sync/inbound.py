"""Config the backend pushes down: tariffs, permits, reservations and the deny list.

An update arrives as `{"version": N, "data": ...}` on a retained MQTT topic or
from an HTTP pull. It is validated in full before anything changes; a valid
one is stored as a new version in the journal's config cache together with its
`config.applied` event, in one transaction; an invalid one is reported with
`config.applied` (outcome `rejected`, with the errors) and the version in force
stays. A retained message comes again on every reconnect, so a version already
in force, or already rejected, is passed over quietly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any

import structlog
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from gateway.core import events
from gateway.core.clock import Clock
from gateway.core.events import ConfigKind, ConfigSource
from gateway.core.rights import RIGHTS
from gateway.core.tariff import RateTable
from gateway.journal import Journal, PutConfig

log = structlog.get_logger(__name__)

MAX_ERRORS = 20  # reported per rejected update; the rest are counted
MAX_UPDATE_BYTES = 8 * 1024 * 1024  # a deny list of ~100,000 plates fits
MAX_REMEMBERED_REJECTIONS = 1000


class Tariffs(RootModel[dict[Annotated[str, Field(min_length=1, max_length=64)], RateTable]]):
    @model_validator(mode="after")
    def _not_empty(self) -> Tariffs:
        if not self.root:
            raise ValueError("at least one tariff is required")
        return self


class _Update(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    data: Any


_VALIDATORS: dict[str, TypeAdapter[Any]] = {"tariffs": TypeAdapter(Tariffs), **RIGHTS}
KINDS: tuple[ConfigKind, ...] = ("tariffs", "permits", "reservations", "deny_list")

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
            return "ignored"
        typed_kind: ConfigKind = kind  # type: ignore[assignment]
        if len(raw) > MAX_UPDATE_BYTES:
            return await self._reject(typed_kind, 0, source, [
                f"update of {len(raw)} bytes is over the {MAX_UPDATE_BYTES} byte limit"],
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
    return version if isinstance(version, int) and 0 <= version < 2**53 else 0


def _canonical(kind: str, model: Any) -> str:
    dumped = _VALIDATORS[kind].dump_python(model, mode="json", exclude_none=True)
    return json.dumps(dumped, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
