"""Debug capture: the crops of reads that fell below the threshold, kept for tuning on site.

A technician tuning a lane (camera angle, threshold, formats) needs the reads that failed, not
the ones that worked. Each capture is a PNG of the plate crop and a JSON sidecar (the guess, its
confidence per character, the box, the reason, timings). The folder is bounded in size: when a
new capture would pass `max_mb`, the oldest captures are deleted first, so an SD card never
fills up with them. Crops show plates, which are personal data, so they are bounded in age too
(`[lpr] capture_max_age_h`): the store deletes the expired ones before each save and when it
starts, and the daemon's maintenance deletes them in between (`expire_captures`: reads may fail
seldom). A purge on a person's request deletes those of their plate (`purge_captures`).

Writes are small (a plate crop is a few KB) and happen only on failed reads, so they are done in
place; a write that fails is logged and counted, never raised to the lane.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway.core.clock import Clock
from gateway.core.plates import normalize

if TYPE_CHECKING:
    from gateway.core.reads import PlateResult

log = structlog.get_logger(__name__)

__all__ = ["CaptureStore", "expire_captures", "purge_captures"]

_SUFFIXES = (".png", ".json")


@dataclass(frozen=True, slots=True)
class _Capture:
    stem: Path  # the path without suffix; the capture is stem.png and stem.json
    size: int


class CaptureStore:
    """A folder of low-confidence crops with their JSON sidecars, bounded in size and, given
    `max_age_h`, in age."""

    def __init__(self, directory: Path, *, max_mb: float, clock: Clock,
                 max_age_h: float | None = None) -> None:
        if max_mb <= 0:
            raise ValueError("max_mb must be positive")
        if max_age_h is not None and max_age_h <= 0:
            raise ValueError("max_age_h must be positive")
        self.directory = directory
        self.max_bytes = int(max_mb * 2**20)
        self.max_age = None if max_age_h is None else timedelta(hours=max_age_h)
        self._clock = clock
        self._captures: deque[_Capture] = deque()
        self._bytes = 0
        self._counter = 0
        self.saved = 0
        self.deleted = 0
        self.failed = 0
        self._scan()

    def _scan(self) -> None:
        """Take in what an earlier run left, oldest first (names sort by time)."""
        if not self.directory.is_dir():
            return
        stems = sorted({p.with_suffix("") for p in self.directory.iterdir()
                        if p.suffix in _SUFFIXES and p.is_file()})
        for stem in stems:
            size = sum(p.stat().st_size for p in _files(stem) if p.exists())
            self._captures.append(_Capture(stem, size))
            self._bytes += size
        self._expire()
        self._enforce_bound(0)

    @property
    def used_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._captures)

    def save(self, result: PlateResult, *, camera_id: str | None = None) -> Path | None:
        """Keep a read that was not accepted; returns the PNG's path (None if nothing to keep).

        A result without a crop is kept as a sidecar only. Never raises for a disk problem.
        """
        now = self._clock.now()
        self._counter += 1
        camera = "".join(c if c.isalnum() or c in "-_" else "_" for c in camera_id or "camera")
        stem = self.directory / f"{_time_mark(now)}Z-{self._counter:06d}-{camera}"
        sidecar = json.dumps(_sidecar(result, camera_id, now.isoformat()), indent=1).encode()
        png = result.crop_png or b""
        size = len(sidecar) + len(png)
        if size > self.max_bytes:
            return None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._expire()
            self._enforce_bound(size)
            if png:
                stem.with_suffix(".png").write_bytes(png)
            stem.with_suffix(".json").write_bytes(sidecar)
        except OSError as exc:
            self.failed += 1
            log.warning("lpr_capture_failed", directory=str(self.directory), error=str(exc))
            return None
        self._captures.append(_Capture(stem, size))
        self._bytes += size
        self.saved += 1
        log.debug("lpr_capture_saved", path=str(stem), guess=result.guess,
                  confidence=result.confidence)
        return stem.with_suffix(".png") if png else stem.with_suffix(".json")

    def _expire(self) -> None:
        """Delete the captures older than `max_age` (oldest first, as their names sort)."""
        if self.max_age is None:
            return
        mark = _time_mark(self._clock.now() - self.max_age)
        while self._captures and _taken_before(self._captures[0].stem, mark):
            self._delete_oldest()

    def _enforce_bound(self, incoming: int) -> None:
        """Delete the oldest captures until `incoming` more bytes fit."""
        while self._captures and self._bytes + incoming > self.max_bytes:
            self._delete_oldest()

    def _delete_oldest(self) -> None:
        oldest = self._captures.popleft()
        for path in _files(oldest.stem):
            path.unlink(missing_ok=True)
        self._bytes -= oldest.size
        self.deleted += 1


def expire_captures(directory: Path, before: datetime) -> int:
    """Delete the captures taken before `before` (their names begin with the time they were
    taken); return how many. Crops are personal data: the size bound alone would keep them
    for as long as reads fail seldom."""
    mark = _time_mark(before)
    return _delete(stem for stem in _stems(directory) if _taken_before(stem, mark))


def purge_captures(directory: Path, plate: str) -> int:
    """Delete the captures whose guess is `plate` (normalised); return how many."""
    return _delete(stem for stem in _stems(directory) if _guess(stem) == plate)


def _time_mark(at: datetime) -> str:
    """`at` as a capture's name begins with it."""
    return f"{at.astimezone(UTC):%Y%m%dT%H%M%S%f}"


def _taken_before(stem: Path, mark: str) -> bool:
    return stem.name[:len(mark)] < mark


def _stems(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted({p.with_suffix("") for p in directory.iterdir()
                   if p.suffix in _SUFFIXES and p.is_file()})


def _guess(stem: Path) -> str | None:
    try:
        guess = json.loads(stem.with_suffix(".json").read_bytes()).get("guess")
    except (OSError, ValueError, AttributeError):
        return None
    return normalize(guess) if isinstance(guess, str) else None


def _delete(stems: Iterable[Path]) -> int:
    count = 0
    for stem in stems:
        for path in _files(stem):
            path.unlink(missing_ok=True)
        count += 1
    return count


def _files(stem: Path) -> list[Path]:
    return [stem.with_suffix(suffix) for suffix in _SUFFIXES]


def _sidecar(result: PlateResult, camera_id: str | None, at: str) -> dict[str, Any]:
    return {
        "at": at,
        "camera_id": camera_id,
        "guess": result.guess,
        "confidence": result.confidence,
        "char_confidences": list(result.char_confidences),
        "reason": result.reason,
        "box": list(result.box) if result.box else None,
        "format": result.format,
        "frames_used": result.frames_used,
        "frames_agreeing": result.frames_agreeing,
        "frames_total": result.frames_total,
        "timings_ms": dict(result.timings_ms),
    }
