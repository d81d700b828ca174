"""One frame in, ranked plate readings out: detect, recognize, correct towards a format.

The learned detector (detect.py) proposes text lines, joined and stacked into plate
candidates; the hand-made glyph-row localizer (localize.py) can add its own. The recognizer
reads the best candidate first, and the others (with their other renderings) only when
that first read is not confident enough. Each read is then made to fit the lot's plate
formats where a confusable swap, or the recognizer's own runner-up, allows it
(`plates.best_format_reading`), and candidates are ranked on recognizer confidence,
plausibility as a plate and localization score.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import numpy.typing as npt
import structlog

from gateway.core import plates
from gateway.core.plates import Alternatives
from gateway.drivers.image import BadImage, decode_image
from gateway.lpr import detect, localize
from gateway.lpr.localize import Box, ImageError, PlateCandidate
from gateway.lpr.recognize import (
    DEFAULT_ENSEMBLE_ABOVE,
    DEFAULT_ENSEMBLE_BELOW,
    DEFAULT_NETWORKS,
    DEFAULT_WEIGHTS,
    EasyOcrOptions,
    EasyOcrRecognizer,
    OnnxOptions,
    OnnxRecognizer,
    Recognizer,
    TextRead,
)

log = structlog.get_logger(__name__)

Image = npt.NDArray[np.uint8]


# What a character dropped from a read adds to the read's mean confidence, per unit of doubt
# (1 - its confidence): a shortened read must clearly beat the whole one.
DROPPED_MERIT = 0.5


@dataclass(frozen=True)
class ReaderOptions:
    """Tuning of one plate reader; the defaults are what the dev-set figures were taken with."""

    # Where candidates come from: "detector" (the learned text detector), "glyphs" (the
    # glyph-row and edge rules of localize.py), or both joined with "+".
    localizer: str = "detector"
    # The detector sees the frame scaled to this longer side (see detect.py). 640 halves the
    # time per frame; distant plates and small frames then lose reads (docs/lpr.md).
    detector_side: int = detect.DEFAULT_MAX_SIDE
    max_side: int = 1024
    max_candidates: int = 6
    first_pass: int = 1
    confident: float = 0.75
    format_to_settle: bool = True
    variants: int = 1
    trim_below: float = 0.9
    # A middle character read at or below this may be a seal or an emblem between the groups
    # (the Czech and Slovak plates', read as an 8 by PP-OCR at 0.5 to 0.97): the read without
    # it competes with the whole read (openalpr-dev EU 75.0% -> 78.7%; 0.95 gave 79.6% but
    # dropped a glyph read at 0.95; the other sets read the same at 0.6 and at 0.95).
    drop_inner_below: float = 0.9
    min_chars: int = 4
    max_chars: int = 10
    formats: tuple[str, ...] = plates.DEFAULT_FORMAT_GROUPS
    max_correction_cost: float = plates.MAX_CORRECTION_COST
    # Try the format entries one after the other (a lot lists its home country first), rather
    # than all at once, where the most confident fit of any country wins.
    formats_in_order: bool = True
    # One thread: on a busy 2-core box a second OpenMP thread mostly spins (measured:
    # 3-4x the CPU time per crop for at best the same wall time), and the other core
    # stays free for the event loop and the camera.
    threads: int = 1
    quantize: bool = False
    model_dir: str | None = None
    # "onnx" (ONNX Runtime, no torch) or "easyocr" (torch; the `train` extra).
    engine: str = "onnx"
    # The ONNX engine's networks: "ppocr", "plate" or an exported .onnx path,
    # several joined with "+" (an ensemble; see recognize.OnnxRecognizer).
    networks: str = DEFAULT_NETWORKS
    # The EasyOCR engine's weights, as lpr.recognizer_weights: "plate", "english_g2", a state
    # dict path, or several joined with "+" (an ensemble; see recognize.DEFAULT_WEIGHTS).
    weights: str = DEFAULT_WEIGHTS
    ensemble_above: float = DEFAULT_ENSEMBLE_ABOVE
    ensemble_below: float = DEFAULT_ENSEMBLE_BELOW


@dataclass(frozen=True)
class Candidate:
    """One plate reading of a frame."""

    text: str
    confidence: float
    char_confidences: list[float]
    box: Box
    crop: Image
    raw_text: str = ""
    format: str | None = None
    score: float = 0.0


@dataclass
class FrameReading:
    """Everything a frame gave: candidates best first, and where the time went."""

    candidates: list[Candidate] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    searched_boxes: list[Box] = field(default_factory=list)
    error: str | None = None

    @property
    def text(self) -> str:
        return self.candidates[0].text if self.candidates else ""

    @property
    def confidence(self) -> float:
        return self.candidates[0].confidence if self.candidates else 0.0


class PlateReader:
    """Localize, recognize and rank plates in single frames."""

    def __init__(
        self, options: ReaderOptions | None = None, recognizer: Recognizer | None = None
    ) -> None:
        self.options = opts = options or ReaderOptions()
        self._formats = plates.formats_for(opts.formats)
        if opts.formats_in_order:
            self._format_groups = [plates.formats_for([entry]) for entry in opts.formats]
        else:
            self._format_groups = [self._formats]
        self._recognizer: Recognizer = recognizer or _recognizer(opts)
        sources = [name.strip() for name in opts.localizer.split("+")]
        unknown = set(sources) - {"detector", "glyphs"}
        if unknown or not sources:
            raise ValueError(f"localizer {opts.localizer!r}: expected detector, glyphs or both")
        self._glyphs = "glyphs" in sources
        self._detector = (detect.TextDetector(opts.detector_side, opts.threads)
                          if "detector" in sources else None)

    def warm_up(self) -> None:
        """Load the model and run one frame through everything."""
        cv2.setNumThreads(self.options.threads)
        self._recognizer.warm_up()
        if self._detector is not None:
            self._detector.warm_up()
        frame = np.full((240, 320, 3), 128, dtype=np.uint8)
        self.read(frame)

    def read_bytes(self, data: bytes) -> FrameReading:
        """Decode and read an encoded frame (JPEG, PNG); undecodable data gives `error`."""
        start = time.perf_counter()
        try:
            image = decode_image(data)
        except BadImage as exc:
            log.warning("lpr.read.bad_image", error=str(exc))
            elapsed = _ms(start)
            return FrameReading(error=str(exc), timings_ms={"decode": elapsed, "total": elapsed})
        decoded = _ms(start)
        reading = self.read(image)
        reading.timings_ms["decode"] = decoded
        reading.timings_ms["total"] = _ms(start)
        return reading

    def read(self, image: npt.NDArray[np.generic]) -> FrameReading:
        """Read the plates in one decoded frame (BGR, BGRA or grey).

        A frame that cannot hold a plate (empty, tiny, wrong shape) gives a
        reading with no candidates and `error` set, never an exception.
        """
        start = time.perf_counter()
        reading = FrameReading()
        try:
            found = self._localize(image)
        except ImageError as exc:
            log.warning("lpr.read.bad_image", error=str(exc))
            reading.error = str(exc)
            reading.timings_ms = {"localize": _ms(start), "recognize": 0.0, "total": _ms(start)}
            return reading
        localized = time.perf_counter()
        reading.candidates = self._recognize(found)
        done = time.perf_counter()
        reading.searched_boxes = [c.box for c in found]
        reading.timings_ms = {
            "localize": (localized - start) * 1000.0,
            "recognize": (done - localized) * 1000.0,
            "total": (done - start) * 1000.0,
        }
        return reading

    def _localize(self, image: npt.NDArray[np.generic]) -> list[PlateCandidate]:
        """Plate candidates of one frame, best first, from the configured sources."""
        opts = self.options
        found: list[PlateCandidate] = []
        if self._detector is not None:
            found += detected_candidates(self._detector, image, opts.max_candidates)
        if self._glyphs:
            found += localize.find_candidates(image, max_candidates=opts.max_candidates,
                                              max_side=opts.max_side)
        if self._detector is not None and self._glyphs:
            found.sort(key=lambda c: c.score, reverse=True)
        return found

    def _recognize(self, found: Sequence[PlateCandidate]) -> list[Candidate]:
        """Recognize the best candidates' cleaned crops; look further only while unsure.

        The second look covers the remaining candidates, each with its other
        rendering: the uncleaned crop of a glyph row (cleaning can erase a glyph
        merged with a seal), the glyph row found inside an edge region. With
        `format_to_settle`, only a read that fits one of the lot's formats is confident
        enough to stop the search: a car's badge or a dealer's frame reads as surely as a
        plate.
        """
        opts = self.options
        first = list(found[: opts.first_pass])
        results = self._read_crops([(c, c.crop) for c in first])
        settled = [c for c in results if c.format is not None or not opts.format_to_settle]
        if _best_score(settled) < opts.confident:
            more = [(c, v) for c in first for v in c.variants[: opts.variants]]
            more += [(c, crop) for c in found[opts.first_pass :]
                     for crop in (c.crop, *c.variants[: opts.variants])]
            results += self._read_crops(more)
        return _best_per_box(results)

    def _read_crops(self, items: Sequence[tuple[PlateCandidate, Image]]) -> list[Candidate]:
        """Recognize crops in one batch."""
        if not items:
            return []
        reads = self._recognizer.recognize([crop for _, crop in items])
        pairs = zip(items, reads, strict=True)
        return [self._candidate(cand, read, crop) for (cand, crop), read in pairs]

    def _candidate(self, found: PlateCandidate, read: TextRead, crop: Image) -> Candidate:
        confs = list(read.char_confidences) or [read.confidence] * len(read.text)
        alts = list(read.alternatives) if len(read.alternatives) == len(read.text) else None
        text, confs, fmt = self._correct(read.text, confs, alts)
        confidence = float(np.mean(confs)) if confs else 0.0
        score = confidence * self._plausibility(text, fmt) * (0.7 + 0.3 * min(1.0, found.score))
        return Candidate(
            text=text,
            confidence=confidence,
            char_confidences=confs,
            box=found.box,
            crop=crop,
            raw_text=read.text,
            format=fmt,
            score=score,
        )

    def _correct(self, text: str, confs: list[float], alts: Alternatives | None = None
                 ) -> tuple[str, list[float], str | None]:
        """Fit a read to the lot's formats, trying them in the configured order.

        A lot lists its home country's formats first; the first group a read can
        be made to fit wins, so a Brazilian lot reads "NT01053" as "NTO1053"
        rather than as a Polish plate. That preference is worth one confusable
        swap: a read that needs more to fit an earlier group, but fits a later
        one as read, is taken as read ("M5XSE" is a British plate, not the
        German "MSX5E"). A read one character too long may also lose a doubtful
        first, last or middle character: the ends of a row are where screws and
        frame edges get read as glyphs. Within a group the whole read and its
        shortenings compete on mean confidence after correction, a dropped
        character counting as half the doubt it was read with (1 - its
        confidence): a shortening must clearly beat the whole read.
        """
        first: plates.Correction | None = None
        for group in self._format_groups:
            correction = self._fit_group(text, confs, group, alts)
            if correction is None:
                continue
            if first is None:
                first = correction
                if len(correction.substitutions) <= 1:
                    break
            elif not correction.substitutions:
                first = correction
                break
        if first is None:
            return text, confs, None
        return first.text, list(first.char_confidences), first.format

    def _fit_group(self, text: str, confs: list[float], group: Sequence[plates.PlateFormat],
                   alts: Alternatives | None = None) -> plates.Correction | None:
        """The best fit of the read, or of one of its shortenings, to one group's formats."""
        best: tuple[float, plates.Correction] | None = None
        for places, dropped in self._shortened(text, confs):
            variant = "".join(text[i] for i in places)
            variant_confs = [confs[i] for i in places]
            variant_alts = None if alts is None else [alts[i] for i in places]
            correction = plates.best_format_reading(
                [(variant, variant_confs)], group, max_cost=self.options.max_correction_cost,
                alternatives=[variant_alts],
            )
            if correction is None:
                continue
            kept = correction.char_confidences
            doubt = sum(DROPPED_MERIT * (1.0 - c) for c in dropped)
            merit = (sum(kept) + doubt) / (len(kept) + len(dropped))
            if best is None or merit > best[0]:
                best = (merit, correction)
        return None if best is None else best[1]

    def _shortened(self, text: str, confs: list[float]) -> list[tuple[list[int], list[float]]]:
        """The read, then the read less one doubtful character at either end or in the middle.

        Ends: screws and frame edges. Middle: a seal or sticker between the glyph
        groups, read as a glyph; it is the least confident character when it is.
        Each comes as the positions it keeps, with the confidences of those it dropped.
        """
        n = len(text)
        whole = list(range(n))
        reads: list[tuple[list[int], list[float]]] = [(whole, [])]
        if n <= self.options.min_chars:
            return reads
        if confs[0] <= self.options.trim_below:
            reads.append((whole[1:], confs[:1]))
        if confs[-1] <= self.options.trim_below:
            reads.append((whole[:-1], confs[-1:]))
        inner = min(range(1, n - 1), key=lambda i: confs[i])
        if confs[inner] <= self.options.drop_inner_below:
            reads.append(([i for i in whole if i != inner], [confs[inner]]))
        return reads

    def _plausibility(self, text: str, fmt: str | None) -> float:
        """How much a text looks like a plate at all: length, and a known format."""
        n = len(text)
        if n < self.options.min_chars or n > self.options.max_chars:
            return 0.1
        if fmt is not None:
            return 1.0
        return 0.8 if plates.is_valid(text, self._formats) else 0.6


def _recognizer(opts: ReaderOptions) -> Recognizer:
    if opts.engine == "onnx":
        return OnnxRecognizer(OnnxOptions(
            networks=opts.networks, threads=opts.threads, ensemble_above=opts.ensemble_above,
            ensemble_below=opts.ensemble_below))
    if opts.engine == "easyocr":
        return EasyOcrRecognizer(EasyOcrOptions(
            model_dir=opts.model_dir, threads=opts.threads, quantize=opts.quantize,
            weights=opts.weights, ensemble_above=opts.ensemble_above,
            ensemble_below=opts.ensemble_below))
    raise ValueError(f"engine {opts.engine!r}: expected onnx or easyocr")


def detected_candidates(detector: detect.TextDetector, image: npt.NDArray[np.generic],
                        limit: int, side: int | None = None) -> list[PlateCandidate]:
    """The detector's lines, joined into plate candidates, rectified; best first.

    Candidates are ranked on the detector's confidence and on looking like a plate's text
    (a run of a few characters, not a word in a sentence); the recognizer and the formats
    decide among the survivors.
    """
    grey = localize.to_grey(image)
    bgr = _bgr(image)
    lines = detector.detect(bgr, side)
    found: list[PlateCandidate] = []
    for cand in detect.plate_lines(lines):
        crop = detect.render(grey, cand, localize.CROP_HEIGHT)
        if crop is None:
            continue
        quad = cand.quad
        found.append(PlateCandidate(
            box=_plate_box(quad, grey.shape), quad=quad, score=_line_score(cand, crop),
            crop=crop, method="detector", glyphs=0))
    found.sort(key=lambda c: c.score, reverse=True)
    # The contrast-stretched rendering, for a second look, only for the candidates kept.
    return [replace(c, variants=[localize.normalise_contrast(c.crop)])
            for c in _distinct(found, limit)]


def _line_score(cand: detect.LineCandidate, crop: Image) -> float:
    """The detector's confidence, times how plate-like the crop's shape is."""
    aspect = crop.shape[1] / max(crop.shape[0], 1)
    # Plate text runs some 2 to 9 heights wide; one row of a two-row plate less.
    shape = 1.0 if 1.5 <= aspect <= 9.0 else 0.6
    return cand.score * shape


def _distinct(found: list[PlateCandidate], limit: int) -> list[PlateCandidate]:
    kept: list[PlateCandidate] = []
    for cand in found:
        if any(localize.iou(cand.box, k.box) > 0.9 for k in kept):
            continue
        kept.append(cand)
        if len(kept) >= limit:
            break
    return kept


def _plate_box(quad: npt.NDArray[np.float32], shape: Sequence[int]) -> Box:
    """The plate's box around its text: a margin of 0.3 of the text's height."""
    x0, y0 = quad.min(axis=0)
    x1, y1 = quad.max(axis=0)
    h = float(np.linalg.norm(quad[3] - quad[0]))
    return localize.clip_box(x0 - 0.3 * h, y0 - 0.3 * h, x1 + 0.3 * h, y1 + 0.3 * h, shape)


def _bgr(image: npt.NDArray[np.generic]) -> Image:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim == 2:
        return np.asarray(cv2.cvtColor(localize.to_grey(arr), cv2.COLOR_GRAY2BGR), np.uint8)
    if arr.shape[2] == 4:
        return np.asarray(cv2.cvtColor(arr, cv2.COLOR_BGRA2BGR), np.uint8)
    if arr.shape[2] == 1:
        return np.asarray(cv2.cvtColor(arr[:, :, 0], cv2.COLOR_GRAY2BGR), np.uint8)
    return np.asarray(arr, np.uint8)


def _best_score(results: Sequence[Candidate]) -> float:
    return max((c.score for c in results), default=0.0)


def _best_per_box(results: Sequence[Candidate]) -> list[Candidate]:
    """Best read of each localized box, best box first."""
    best: dict[tuple[int, int, int, int], Candidate] = {}
    for cand in results:
        if cand.box not in best or cand.score > best[cand.box].score:
            best[cand.box] = cand
    return sorted(best.values(), key=lambda c: c.score, reverse=True)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
