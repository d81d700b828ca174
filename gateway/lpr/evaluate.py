"""Measure a plate reader on a folder of labelled photos (the openalpr benchmark layout).

Each photo `NAME.jpg` (or .png) sits beside `NAME.txt` holding one line,
`file<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE`. The reader only ever sees the
decoded pixels; the label is read after the reading, for scoring.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import structlog

from gateway.lpr.localize import Box, ImageError, decode_image, iou

log = structlog.get_logger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
LOCALIZED_IOU = 0.5


class LabelError(ValueError):
    """A label file does not follow the `file x y w h PLATE` layout."""


@dataclass(frozen=True)
class Sample:
    """One labelled photo."""

    image: Path
    box: Box
    plate: str


@dataclass(frozen=True)
class SampleResult:
    """What the reader made of one sample."""

    sample: Sample
    read: str
    localized: bool
    elapsed_ms: float


class Reader(Protocol):
    """Anything that turns a decoded frame into a reading."""

    def read(self, image: npt.NDArray[np.uint8]) -> Any: ...


def parse_label(path: Path) -> Sample:
    """Parse one openalpr label file; raise LabelError on a malformed one."""
    line = path.read_text(encoding="utf-8").strip().splitlines()
    if not line:
        raise LabelError(f"{path}: empty label")
    fields = line[0].split("\t")
    if len(fields) < 6:
        fields = line[0].split()
    if len(fields) < 6:
        raise LabelError(f"{path}: expected 'file x y w h PLATE', got {line[0]!r}")
    try:
        x, y, w, h = (int(float(v)) for v in fields[1:5])
    except ValueError as exc:
        raise LabelError(f"{path}: box is not numeric: {fields[1:5]}") from exc
    image = path.with_name(fields[0])
    if not image.exists():
        raise LabelError(f"{path}: image {fields[0]} is missing")
    plate = "".join(ch for ch in fields[5].upper() if ch.isalnum())
    return Sample(image=image, box=(x, y, w, h), plate=plate)


def load_samples(folder: Path) -> list[Sample]:
    """All labelled photos in `folder`, sorted by name; unlabelled images are skipped."""
    if not folder.is_dir():
        raise LabelError(f"{folder} is not a folder")
    samples: list[Sample] = []
    for label in sorted(folder.glob("*.txt")):
        try:
            samples.append(parse_label(label))
        except LabelError as exc:
            log.warning("lpr.eval.bad_label", error=str(exc))
    if not samples:
        raise LabelError(f"{folder} holds no labelled photos (NAME.jpg + NAME.txt)")
    return samples


def decode(data: bytes) -> npt.NDArray[np.uint8] | None:
    """Decode image bytes as a camera snapshot is decoded; None when undecodable."""
    try:
        return decode_image(data)
    except ImageError:
        return None


def edit_distance(a: str, b: str) -> int:
    """Plain Levenshtein distance."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _near_miss() -> tuple[Callable[[str, str], bool], bool]:
    """plates.py's one-confusable test, or plain edit distance <= 1 when it is not there."""
    try:
        from gateway.lpr import plates
    except ImportError:
        plates = None  # type: ignore[assignment]
    test = getattr(plates, "within_one_confusable", None)
    if callable(test):
        return test, True
    return (lambda read, truth: edit_distance(read, truth) <= 1), False


def _reading_text(reading: Any) -> str:
    text = getattr(reading, "text", None)
    if isinstance(text, str):
        return text
    candidates = getattr(reading, "candidates", None) or []
    return str(candidates[0].text) if candidates else ""


def _reading_boxes(reading: Any) -> list[Box]:
    candidates = getattr(reading, "candidates", None) or []
    boxes: list[Box] = [_box(c.box) for c in candidates]
    boxes.extend(_box(b) for b in getattr(reading, "searched_boxes", []) or [])
    return boxes


def _box(value: Any) -> Box:
    x, y, w, h = (int(v) for v in value)
    return (x, y, w, h)


def run_samples(
    samples: list[Sample], reader: Reader, *, progress: Callable[[SampleResult], None] | None = None
) -> Iterator[SampleResult]:
    """Read each sample, timing from the raw bytes to the final read."""
    for sample in samples:
        data = sample.image.read_bytes()
        start = time.perf_counter()
        image = decode(data)
        reading = _read_one(reader, image, sample) if image is not None else None
        if image is None:
            log.warning("lpr.eval.undecodable", image=str(sample.image))
        elapsed = (time.perf_counter() - start) * 1000.0
        text = _reading_text(reading) if reading is not None else ""
        boxes = _reading_boxes(reading) if reading is not None else []
        localized = any(iou(box, sample.box) >= LOCALIZED_IOU for box in boxes)
        result = SampleResult(sample=sample, read=text, localized=localized, elapsed_ms=elapsed)
        if progress is not None:
            progress(result)
        yield result


def _read_one(reader: Reader, image: npt.NDArray[np.uint8], sample: Sample) -> Any:
    """One read; a reader that fails on a photo scores a miss there instead of ending the run."""
    try:
        return reader.read(image)
    except Exception as exc:  # a bug or a crashed engine: count it, say where, go on
        log.error("lpr.eval.read_failed", image=str(sample.image), error=repr(exc))
        return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process (the reader runs here during evaluation)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return round(peak / (1024.0 * 1024.0) if os.uname().sysname == "Darwin" else peak / 1024.0, 1)


def summarise(results: list[SampleResult], *, rss_mb: float) -> dict[str, Any]:
    """The issue's evaluation figures for a list of results."""
    near_miss, _ = _near_miss()
    n = len(results)
    exact = sum(1 for r in results if r.read == r.sample.plate)
    near = sum(1 for r in results if near_miss(r.read, r.sample.plate))
    localized = sum(1 for r in results if r.localized)
    times = sorted(r.elapsed_ms for r in results)
    return {
        "images": n,
        "exact": exact,
        "accuracy": round(exact / n, 4) if n else 0.0,
        "within_one_confusable": round(near / n, 4) if n else 0.0,
        "localized": round(localized / n, 4) if n else 0.0,
        "p50_ms": round(statistics.median(times), 1) if times else 0.0,
        "p95_ms": round(_percentile(times, 95), 1) if times else 0.0,
        "worker_peak_rss_mb": rss_mb,
    }


def _percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, int(np.ceil(pct / 100.0 * len(sorted_values))))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def evaluate(
    folder: Path,
    reader: Reader,
    *,
    progress: Callable[[SampleResult], None] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Read every labelled photo in `folder` with a warm `reader`; return the figures.

    Keys: images, exact, accuracy, within_one_confusable, localized, p50_ms,
    p95_ms, worker_peak_rss_mb.
    """
    samples = load_samples(Path(folder))
    if limit is not None:
        samples = samples[:limit]
    warm_up = getattr(reader, "warm_up", None)
    if callable(warm_up):
        warm_up()
    results = list(run_samples(samples, reader, progress=progress))
    _, confusable = _near_miss()
    if not confusable:
        log.warning("lpr.eval.plain_distance", reason="plates.within_one_confusable is missing")
    return summarise(results, rss_mb=peak_rss_mb())
