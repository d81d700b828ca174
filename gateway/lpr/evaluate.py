"""Measure a plate reader on a folder of labelled photos (the openalpr benchmark layout).

Each photo `NAME.jpg` (or .png) sits beside `NAME.txt` holding one line,
`file<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE`. The reader only ever sees the
decoded pixels; the label is read after the reading, for scoring.

Besides the reader's best read, each photo's candidates are put to the lane's vote
(`consensus.vote` at the lane's threshold), so the figures also say how often the lane would
take a plate, and how often it would take a wrong one without asking anybody.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import structlog

from gateway.core.plates import PlateFormat
from gateway.core.stats import percentile
from gateway.drivers.image import BadImage, decode_image, read_image_file
from gateway.lpr.consensus import (
    DEFAULT_CHAR_THRESHOLD,
    DEFAULT_THRESHOLD,
    PlateRead,
    edit_table,
    vote,
)
from gateway.lpr.localize import Box, iou
from gateway.lpr.worker import encode_png

log = structlog.get_logger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
LOCALIZED_IOU = 0.5
TOP_CHAR_ERRORS = 10  # character confusions listed in per_char_errors


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
    accepted: str | None = None  # the plate the lane's vote takes at the threshold, if any
    vote_confidence: float = 0.0  # what the threshold was held against
    top: PlateRead | None = None  # the reader's best candidate, its crop left out


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
    except BadImage:
        return None


def edit_distance(a: str, b: str) -> int:
    """Plain Levenshtein distance."""
    return edit_table(a, b)[-1][-1]


def char_errors(truth: str, read: str) -> list[tuple[str, str]]:
    """The (truth, read) character pairs a Levenshtein alignment of `read` to `truth` gets wrong.

    A substitution gives both characters; a character of the truth missing from the read gives
    (char, ""), an extra one in the read ("", char). Where alignments tie, substitutions are
    preferred, so "ABC" read as "ABD" is C->D, not a deletion and an insertion.
    """
    table = edit_table(truth, read)
    errors: list[tuple[str, str]] = []
    i, j = len(truth), len(read)
    while i or j:
        if i and j and table[i][j] == table[i - 1][j - 1] + (truth[i - 1] != read[j - 1]):
            if truth[i - 1] != read[j - 1]:
                errors.append((truth[i - 1], read[j - 1]))
            i, j = i - 1, j - 1
        elif i and table[i][j] == table[i - 1][j] + 1:
            errors.append((truth[i - 1], ""))
            i -= 1
        else:
            errors.append(("", read[j - 1]))
            j -= 1
    return errors[::-1]


def _near_miss() -> tuple[Callable[[str, str], bool], bool]:
    """plates.py's one-confusable test, or plain edit distance <= 1 when it is not there."""
    try:
        from gateway.core import plates
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


def _plate_reads(reading: Any) -> tuple[PlateRead, ...]:
    """A reading's candidates in the one form the vote takes, whatever the reader gave.

    The worker's `ImageReading` holds `PlateRead`s already; a `PlateReader`'s `FrameReading`
    holds `pipeline.Candidate`s. Both become one frame's reads, ranked as the reader ranked
    them; the crop is left out (the vote only passes it along).
    """
    candidates = getattr(reading, "candidates", None) or []
    return tuple(
        PlateRead(str(c.text), float(c.confidence),
                  tuple(float(v) for v in getattr(c, "char_confidences", ()) or ()),
                  _box(c.box), frame=0, rank=rank)
        for rank, c in enumerate(candidates)
    )


def _crop_png(reading: Any) -> bytes | None:
    """The best candidate's crop as PNG: the worker's bytes, or a reader's array encoded."""
    candidates = getattr(reading, "candidates", None) or []
    if not candidates:
        return None
    png = getattr(candidates[0], "crop_png", None)
    return png if isinstance(png, bytes) else encode_png(getattr(candidates[0], "crop", None))


def run_samples(
    samples: list[Sample],
    reader: Reader,
    *,
    progress: Callable[[SampleResult], None] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    formats: Sequence[PlateFormat] = (),
    misses: Path | None = None,
    char_threshold: float = DEFAULT_CHAR_THRESHOLD,
) -> Iterator[SampleResult]:
    """Read each sample, timing from the raw bytes to the final read.

    Each reading's candidates are also voted on as the lane votes (`threshold`, `formats`);
    with `misses`, every photo whose best read is wrong leaves its files there (`write_miss`).
    """
    for sample in samples:
        try:
            data = read_image_file(sample.image)
        except (BadImage, OSError) as e:  # a FIFO or a device among the photos: undecodable
            log.warning("lpr.eval.unreadable", image=str(sample.image), error=str(e))
            data = b""
        start = time.perf_counter()
        image = decode(data)
        reading = _read_one(reader, image, sample) if image is not None else None
        if image is None:
            log.warning("lpr.eval.undecodable", image=str(sample.image))
        elapsed = (time.perf_counter() - start) * 1000.0
        text = _reading_text(reading) if reading is not None else ""
        boxes = _reading_boxes(reading) if reading is not None else []
        localized = any(iou(box, sample.box) >= LOCALIZED_IOU for box in boxes)
        reads = _plate_reads(reading)
        consensus = vote(reads, threshold=threshold, formats=formats,
                         char_threshold=char_threshold)
        result = SampleResult(sample=sample, read=text, localized=localized, elapsed_ms=elapsed,
                              accepted=consensus.plate, vote_confidence=consensus.confidence,
                              top=reads[0] if reads else None)
        if misses is not None and result.read != sample.plate:
            write_miss(misses, result, _crop_png(reading))
        if progress is not None:
            progress(result)
        yield result


def write_miss(folder: Path, result: SampleResult, crop_png: bytes | None) -> None:
    """`STEM.json` (what was read, and what the lane took) and `STEM.png` (the crop) in `folder`.

    STEM is the photo's; a photo without a crop (nothing read, or a reader that gives none)
    leaves the JSON alone.
    """
    stem = result.sample.image.stem
    folder.mkdir(parents=True, exist_ok=True)
    crop_name = f"{stem}.png" if crop_png else None
    if crop_png:
        (folder / f"{stem}.png").write_bytes(crop_png)
    top = result.top
    record = {
        "image": str(result.sample.image),
        "label": result.sample.plate,
        "label_box": list(result.sample.box),
        "read": result.read,
        "accepted": result.accepted,
        "vote_confidence": result.vote_confidence,
        "confidence": round(top.confidence, 4) if top else None,
        "char_confidences": [round(c, 4) for c in top.char_confidences] if top else [],
        "box": list(top.box) if top else None,
        "localized": result.localized,
        "crop": crop_name,
    }
    (folder / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


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
    accepted = sum(1 for r in results if r.accepted is not None)
    accepted_right = sum(1 for r in results if r.accepted == r.sample.plate)
    confident_wrong = accepted - accepted_right
    return {
        "images": n,
        "exact": exact,
        "accuracy": round(exact / n, 4) if n else 0.0,
        "within_one_confusable": round(near / n, 4) if n else 0.0,
        "localized": round(localized / n, 4) if n else 0.0,
        "p50_ms": round(percentile(times, 0.50) or 0.0, 1),
        "p95_ms": round(percentile(times, 0.95) or 0.0, 1),
        "worker_peak_rss_mb": rss_mb,
        "accepted": round(accepted / n, 4) if n else 0.0,
        "accepted_right": round(accepted_right / n, 4) if n else 0.0,
        "confident_wrong": round(confident_wrong / n, 4) if n else 0.0,
        "confident_wrong_count": confident_wrong,
        "per_char_errors": per_char_errors(results),
    }


def per_char_errors(
    results: list[SampleResult], top: int = TOP_CHAR_ERRORS
) -> list[dict[str, Any]]:
    """The most frequent character errors of the wrong best reads, most frequent first.

    Each wrong read is aligned to its label (`char_errors`): {"truth": "M", "read": "H",
    "count": 4}; "read": "" is a character the reads dropped, "truth": "" one they added.
    Photos with no read at all are left out: they missed the plate, not a character.
    """
    counts: Counter[tuple[str, str]] = Counter()
    for r in results:
        if r.read and r.read != r.sample.plate:
            counts.update(char_errors(r.sample.plate, r.read))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [{"truth": truth, "read": read, "count": count} for (truth, read), count in ranked]


def evaluate(
    folder: Path,
    reader: Reader,
    *,
    progress: Callable[[SampleResult], None] | None = None,
    limit: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    formats: Sequence[PlateFormat] = (),
    misses: Path | None = None,
    char_threshold: float = DEFAULT_CHAR_THRESHOLD,
) -> dict[str, Any]:
    """Read every labelled photo in `folder` with a warm `reader`; return the figures.

    Keys: images, exact, accuracy, within_one_confusable, localized, p50_ms,
    p95_ms, worker_peak_rss_mb (as ever); then the lane's view, its vote at `threshold` and
    `char_threshold` with `formats`: accepted (share of photos with a plate taken),
    accepted_right (taken and right), confident_wrong and confident_wrong_count (taken and
    wrong), per_char_errors (see `per_char_errors`), threshold and char_threshold. With
    `misses`, each photo whose best read is wrong leaves `STEM.json` and `STEM.png` there
    (`write_miss`).
    """
    samples = load_samples(Path(folder))
    if limit is not None:
        samples = samples[:limit]
    warm_up = getattr(reader, "warm_up", None)
    if callable(warm_up):
        warm_up()
    results = list(run_samples(samples, reader, progress=progress, threshold=threshold,
                               formats=formats, misses=misses, char_threshold=char_threshold))
    _, confusable = _near_miss()
    if not confusable:
        log.warning("lpr.eval.plain_distance", reason="plates.within_one_confusable is missing")
    return {**summarise(results, rss_mb=peak_rss_mb()), "threshold": threshold,
            "char_threshold": char_threshold}
