"""Find text lines in a frame with a learned detector: PP-OCRv4's DB network in ONNX Runtime.

The network (Apache-2.0, shipped in `gateway/lpr/models/ppocrv4_det.onnx`) maps an image to
a per-pixel probability of being text. A line is a connected region of that map: its
minimum-area rectangle, grown by the DB "unclip" offset (the network is trained to mark a
shrunk core of each line), is the line's box. No hand-made rule about glyphs, edges or plate
frames is involved, so the detector carries over to cameras and countries nobody tuned on.

Scale: the frame is padded on every side before detection, so a plate that fills the whole
image (a technician's photo, a camera zoomed in close) still has the background margin the
network expects around a line; frames are scaled so that their longer side is `max_side`
(multiples of 32), small ones up, large ones down.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from gateway.lpr.localize import warp_quad

Image = npt.NDArray[np.uint8]
Quad = npt.NDArray[np.float32]

MODELS = Path(__file__).resolve().parent / "models"
DETECTOR_MODEL = MODELS / "ppocrv4_det.onnx"

DEFAULT_MAX_SIDE = 960
# Small frames (a plate crop, a camera zoomed in close) are enlarged at most this much: text
# far taller than the network's training text is not found.
MAX_UPSCALE = 2.5
# Padding around the frame, as a share of its longer side (see the module's docstring).
PAD = 0.08
# DB post-processing, as PaddleOCR ships it.
BINARY_THRESHOLD = 0.3
BOX_THRESHOLD = 0.5
UNCLIP_RATIO = 1.6
MIN_SIDE_PX = 3
MAX_LINES = 100


class DetectorError(RuntimeError):
    """The detector's model could not be loaded or run."""


@dataclass(frozen=True)
class TextLine:
    """One detected text line in frame pixels.

    `quad` is its corners (top-left, top-right, bottom-right, bottom-left) along the line;
    `score` is the network's mean text probability inside it.
    """

    quad: Quad
    score: float

    @property
    def height(self) -> float:
        return float(np.linalg.norm(self.quad[3] - self.quad[0]))

    @property
    def centre(self) -> tuple[float, float]:
        c = self.quad.mean(axis=0)
        return float(c[0]), float(c[1])


def onnx_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session on `path`, with `threads` intra-op threads."""
    try:
        import onnxruntime as ort  # type: ignore[import-untyped]
    except ImportError as exc:  # the `lpr` extra is not installed
        raise DetectorError("onnxruntime is not installed (install the 'lpr' extra)") from exc
    if not path.is_file():
        raise DetectorError(f"no model at {path}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    # Shapes vary per frame and per crop: a memory pattern is planned and kept for each shape,
    # which held about 100 MB more at the peak (lpr eval on plates-ucsd-us) for no speed.
    so.enable_mem_pattern = False
    try:
        return ort.InferenceSession(str(path), sess_options=so,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # a damaged file: onnxruntime raises its own kinds
        raise DetectorError(f"cannot load the model {path}: {exc}") from exc


class TextDetector:
    """PP-OCRv4 text detection on whole frames (BGR), CPU only."""

    def __init__(self, max_side: int = DEFAULT_MAX_SIDE, threads: int = 1,
                 model: Path = DETECTOR_MODEL) -> None:
        self.max_side = max_side
        self._threads = threads
        self._model = model
        self._session: Any = None

    def warm_up(self) -> None:
        self.detect(np.full((240, 320, 3), 128, dtype=np.uint8))

    def _load(self) -> Any:
        if self._session is None:
            self._session = onnx_session(self._model, self._threads)
        return self._session

    def detect(self, image: Image, max_side: int | None = None) -> list[TextLine]:
        """The text lines of a BGR frame, most probable first; `max_side` overrides the
        detector's own for this frame."""
        session = self._load()
        h, w = image.shape[:2]
        pad = round(PAD * max(h, w))
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        ph, pw = padded.shape[:2]
        scale = min((max_side or self.max_side) / max(ph, pw), MAX_UPSCALE)
        th = max(32, round(ph * scale / 32) * 32)
        tw = max(32, round(pw * scale / 32) * 32)
        resized = cv2.resize(padded, (tw, th), interpolation=cv2.INTER_AREA
                             if scale < 1 else cv2.INTER_LINEAR)
        blob = (resized.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]
        prob = session.run(None, {session.get_inputs()[0].name: blob})[0][0, 0]
        lines = _lines(prob, sx=pw / tw, sy=ph / th)
        for line in lines:
            line.quad[:, 0] -= pad
            line.quad[:, 1] -= pad
        return lines


def _lines(prob: npt.NDArray[np.float32], sx: float, sy: float) -> list[TextLine]:
    """DB post-processing: the text regions of a probability map, in frame pixels."""
    bitmap = np.asarray(cv2.dilate((prob > BINARY_THRESHOLD).astype(np.uint8),
                                  np.ones((2, 2), np.uint8)), dtype=np.uint8)
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    lines: list[TextLine] = []
    for contour in contours[: 10 * MAX_LINES]:
        rect = cv2.minAreaRect(contour)
        if min(rect[1]) < MIN_SIDE_PX:
            continue
        score = _region_score(prob, np.asarray(contour, dtype=np.int32))
        if score < BOX_THRESHOLD:
            continue
        (cx, cy), (rw, rh), angle = rect
        area, perimeter = rw * rh, 2 * (rw + rh)
        grow = area * UNCLIP_RATIO / max(perimeter, 1e-6)
        grown = ((cx, cy), (rw + 2 * grow, rh + 2 * grow), angle)
        if min(grown[1]) < MIN_SIDE_PX + 2:
            continue
        quad = _ordered(_points(cv2.boxPoints(grown)))
        quad[:, 0] *= sx
        quad[:, 1] *= sy
        lines.append(TextLine(quad=quad, score=score))
    lines.sort(key=lambda line: line.score, reverse=True)
    return lines[:MAX_LINES]


def _region_score(prob: npt.NDArray[np.float32], contour: npt.NDArray[np.int32]) -> float:
    """Mean probability inside the contour's bounding box, over the contour's own pixels."""
    x, y, w, h = cv2.boundingRect(contour)
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(mask, [contour.reshape(-1, 2) - (x, y)], 1)
    return float(cv2.mean(prob[y : y + h, x : x + w], mask)[0])


def _points(points: object) -> Quad:
    return np.asarray(points, dtype=np.float32)


def _ordered(points: npt.NDArray[np.float32]) -> Quad:
    """Corners as top-left, top-right, bottom-right, bottom-left along the line's long side."""
    pts = np.asarray(points, dtype=np.float32)
    # The long side runs between the first two corners.
    by_x = pts[np.argsort(pts[:, 0])]
    left = by_x[:2][np.argsort(by_x[:2, 1])]
    right = by_x[2:][np.argsort(by_x[2:, 1])]
    quad = np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)
    if np.linalg.norm(quad[3] - quad[0]) > 1.5 * np.linalg.norm(quad[1] - quad[0]):
        # A line standing upright (rotated by about 90 degrees): keep it horizontal.
        quad = np.array([quad[3], quad[0], quad[1], quad[2]], dtype=np.float32)
    return quad


def warp_line(image: Image, quad: Quad, height: int, *, pad_x: float = 0.0,
              pad_y: float = 0.0) -> Image | None:
    """The quad warped upright to `height` pixels, widened by `pad_x`/`pad_y` of its height."""
    q = quad.astype(np.float32).copy()
    along = q[1] - q[0]
    across = q[3] - q[0]
    n_along = along / max(float(np.linalg.norm(along)), 1e-6)
    n_across = across / max(float(np.linalg.norm(across)), 1e-6)
    side = float(np.linalg.norm(across))
    dx = n_along * side * pad_x
    dy = n_across * side * pad_y
    q = np.array([q[0] - dx - dy, q[1] + dx - dy, q[2] + dx + dy, q[3] - dx + dy],
                 dtype=np.float32)
    return warp_quad(image, q, height, normalise=False, min_width=height // 2,
                     max_width=24 * height)


# --- from text lines to plate candidates ---------------------------------------------------

# Lines of one plate row: heights within this ratio, centres within this share of the height
# apart vertically, and a gap of at most this many heights between them ("ABC 1234" often
# comes back as two lines).
JOIN_HEIGHT_RATIO = 1.5
JOIN_CENTRE_DY = 0.4
JOIN_MAX_GAP = 1.5
# ...or overlapping by at most this many heights: a glyph at the seam may be in both lines
# (Argentine plates come split as PKX9 + 928: plates-cnnocrlp-ar read 79.7% at 0.3, 83.9% at
# 0.8; the other sets the same).
JOIN_MAX_OVERLAP = 0.8
JOIN_MAX_LINES = 3
# Two rows of one plate: overlapping horizontally by this share of the narrower, and at most
# this many heights apart.
STACK_OVERLAP = 0.5
STACK_MAX_GAP = 0.6
MIN_LINE_HEIGHT_PX = 7.0
# Margins added around a line before it is read, as shares of its height: the detector's
# box can clip a glyph's outer stroke.
CROP_PAD_X = 0.15
CROP_PAD_Y = 0.1


@dataclass(frozen=True)
class LineCandidate:
    """A plate's text as the detector sees it: one line, lines joined, or two rows stacked.

    `rows` holds the quads to rectify, top row first; their crops are read side by side.
    """

    rows: tuple[Quad, ...]
    score: float
    lines: int

    @property
    def quad(self) -> Quad:
        """The quad around all the rows (for the plate's box)."""
        points = np.concatenate(self.rows).astype(np.float32)
        return _ordered(_points(cv2.boxPoints(cv2.minAreaRect(points))))


def plate_lines(lines: list[TextLine]) -> list[LineCandidate]:
    """Every line, every run of lines along one row, and every pair of stacked rows."""
    usable = [ln for ln in lines if ln.height >= MIN_LINE_HEIGHT_PX]
    out = [LineCandidate((ln.quad,), ln.score, 1) for ln in usable]
    order = sorted(usable, key=lambda ln: ln.quad[:, 0].min())
    for i, first in enumerate(order):
        chain = [first]
        for nxt in order[i + 1 :]:
            if len(chain) == JOIN_MAX_LINES:
                break
            if _same_row(chain[-1], nxt):
                chain.append(nxt)
                joined = _joined(chain)
                out.append(LineCandidate((joined,), _mean_score(chain), len(chain)))
    for top in usable:
        for bottom in usable:
            if top is not bottom and _stacked(top, bottom):
                out.append(LineCandidate((top.quad, bottom.quad),
                                         _mean_score([top, bottom]), 2))
    return out


def _same_row(a: TextLine, b: TextLine) -> bool:
    ha, hb = a.height, b.height
    if max(ha, hb) > JOIN_HEIGHT_RATIO * min(ha, hb):
        return False
    h = max(ha, hb)
    if abs(a.centre[1] - b.centre[1]) > JOIN_CENTRE_DY * h:
        return False
    gap = float(b.quad[:, 0].min() - a.quad[:, 0].max())
    return -JOIN_MAX_OVERLAP * h <= gap <= JOIN_MAX_GAP * h


def _stacked(top: TextLine, bottom: TextLine) -> bool:
    t0, t1 = float(top.quad[:, 0].min()), float(top.quad[:, 0].max())
    b0, b1 = float(bottom.quad[:, 0].min()), float(bottom.quad[:, 0].max())
    overlap = min(t1, b1) - max(t0, b0)
    if overlap < STACK_OVERLAP * min(t1 - t0, b1 - b0):
        return False
    gap = float(bottom.quad[:, 1].min() - top.quad[:, 1].max())
    h = max(top.height, bottom.height)
    return top.centre[1] < bottom.centre[1] and -0.3 * h <= gap <= STACK_MAX_GAP * h


def _joined(chain: list[TextLine]) -> Quad:
    points = np.concatenate([ln.quad for ln in chain]).astype(np.float32)
    return _ordered(_points(cv2.boxPoints(cv2.minAreaRect(points))))


def _mean_score(chain: list[TextLine]) -> float:
    return float(np.mean([ln.score for ln in chain]))


def render(image: Image, candidate: LineCandidate, height: int, *, pad_x: float | None = None,
           pad_y: float | None = None) -> Image | None:
    """The candidate's rows rectified to `height` and laid side by side (a two-row plate
    reads as one line: top row, then bottom row)."""
    px = CROP_PAD_X if pad_x is None else pad_x
    py = CROP_PAD_Y if pad_y is None else pad_y
    crops = [warp_line(image, quad, height, pad_x=px, pad_y=py) for quad in candidate.rows]
    if any(c is None for c in crops):
        return None
    parts = [c for c in crops if c is not None]
    if len(parts) == 1:
        return parts[0]
    gap = np.repeat(parts[0][:, :1], max(2, height // 4), axis=1)
    return np.hstack([parts[0], gap, *parts[1:]])
