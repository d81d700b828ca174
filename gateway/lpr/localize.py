"""Find licence-plate candidates in a camera frame with OpenCV.

A plate is, before anything else, a row of four to ten dark-on-light (or
light-on-dark) glyphs of one height, evenly spaced along a straight line. That
holds for every country's plates, so localization looks for exactly that: it
binarises the frame at two scales and both polarities, keeps the connected
components shaped like characters, and chains neighbours of similar height
into text rows. Each row is scored on its glyph count and regularity, its
slope is fitted from the glyph centres, and the row is warped upright into a
grey crop for the recognizer. The crop is then cleaned: only the row's glyphs
stay, seals, dashes, screws and the text printed around the registration are
painted over (recognizers read them as extra characters), and its contrast is
normalised. Glyphs run into the plate's frame are freed by cutting the frame's
long runs away, and a row that runs on to the end of the band it was cut from
is cut again, wider. A second, coarser detector (vertical-edge density closed
into plate-shaped blobs) adds candidates for frames where the glyphs do not
separate, such as small or blurred plates; each such region is searched again
for its glyph row at its own scale, as a second rendering of the candidate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import cv2
import numpy as np
import numpy.typing as npt

from gateway.drivers.image import BadImage

Image = npt.NDArray[np.uint8]
Box = tuple[int, int, int, int]

# The largest side the detectors work on; larger frames are scaled down first
# so that a 10,000 px photo costs what a 1,280 px one does.
DEFAULT_MAX_SIDE = 1280
# Crops handed to the recognizer are this tall (EasyOCR's recognizer input).
CROP_HEIGHT = 64
# Glyphs shorter than this (in work pixels) carry too little detail to read.
MIN_CHAR_HEIGHT = 9
# Frames smaller than this (longer side) are enlarged for the search; see `downscale`.
MIN_WORK_SIDE = 680


class ImageError(BadImage):
    """The frame cannot be used: empty, too small or not an image."""


@dataclass(frozen=True)
class Glyph:
    """One character-shaped connected component, in work-image pixels."""

    x: int
    y: int
    w: int
    h: int

    @property
    def cx(self) -> float:
        return self.x + self.w / 2.0

    @property
    def cy(self) -> float:
        return self.y + self.h / 2.0


@dataclass(frozen=True)
class PlateCandidate:
    """A likely plate: where it is, how plate-like it looks, and its upright crop.

    `box` is the axis-aligned estimate of the whole plate (characters plus the
    plate's margins) in frame pixels; `quad` the four corners (top-left,
    top-right, bottom-right, bottom-left) of the character row that was
    rectified into `crop`; `score` orders candidates, higher first.
    `variants` are other renderings of the same row (the uncleaned crop), for
    a second look when the first read is doubtful.
    """

    box: Box
    quad: npt.NDArray[np.float32]
    score: float
    crop: Image
    method: str
    glyphs: int = 0
    variants: list[Image] = field(default_factory=list)


def to_grey(image: npt.NDArray[np.generic]) -> Image:
    """Return an 8-bit single-channel view of a frame, or raise ImageError."""
    if not isinstance(image, np.ndarray) or image.size == 0:
        raise ImageError("empty image")
    if image.ndim not in (2, 3):
        raise ImageError(f"unsupported image shape {image.shape}")
    if image.shape[0] < 16 or image.shape[1] < 16:
        raise ImageError(f"image too small to hold a plate: {image.shape[1]}x{image.shape[0]}")
    arr = image
    if arr.dtype != np.uint8:
        values = arr.astype(np.float32)
        low, high = float(values.min()), float(values.max())
        arr = ((values - low) * (255.0 / max(high - low, 1e-6))).astype(np.uint8)
    if arr.ndim == 2:
        return _u8(arr)
    channels = arr.shape[2]
    if channels == 1:
        return _u8(np.ascontiguousarray(arr[:, :, 0]))
    if channels == 3:
        return _u8(cv2.cvtColor(_u8(arr), cv2.COLOR_BGR2GRAY))
    if channels == 4:
        return _u8(cv2.cvtColor(_u8(arr), cv2.COLOR_BGRA2GRAY))
    raise ImageError(f"unsupported channel count {channels}")


def downscale(grey: Image, max_side: int, min_side: int = 0) -> tuple[Image, float]:
    """Bring the longer side within [`min_side`, `max_side`]; return the image and the scale.

    Small frames are enlarged (at most twice): the glyph detector's thresholds need
    glyphs of some 10 pixels and more, and a plate in a 450-pixel photo is smaller.
    """
    longest = max(grey.shape[:2])
    if longest > max_side:
        scale = max_side / longest
        interpolation = cv2.INTER_AREA
    elif 0 < longest < min_side:
        scale = min(2.0, min_side / longest)
        interpolation = cv2.INTER_CUBIC
    else:
        return grey, 1.0
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    return _u8(cv2.resize(grey, size, interpolation=interpolation)), scale


def _u8(image: object) -> Image:
    """View an OpenCV result as the 8-bit array it is (OpenCV's stubs type it loosely)."""
    return np.asarray(image, dtype=np.uint8)


def find_candidates(
    image: npt.NDArray[np.generic],
    *,
    max_candidates: int = 6,
    max_side: int = DEFAULT_MAX_SIDE,
) -> list[PlateCandidate]:
    """Return plate candidates in `image` (BGR, BGRA or grey), best first.

    Raises ImageError for frames that cannot hold a plate at all; a frame with
    no plate-like structure gives an empty list.
    """
    grey_full = to_grey(image)
    work, scale = downscale(grey_full, max_side, min(max_side, MIN_WORK_SIDE))
    candidates: list[PlateCandidate] = []
    taken: list[Box] = []
    # Rectifying a row costs more than finding it: do it for the best distinct rows only.
    for score, row, dark in _ranked_rows(_glyph_rows(work)):
        span = _row_span(row)
        if any(iou(span, other) > 0.3 for other in taken):
            continue
        taken.append(span)
        cand = _row_candidate(grey_full, scale, row, dark, score)
        if cand is not None:
            candidates.append(cand)
        if len(candidates) >= max_candidates:
            break
    rows = list(candidates)
    if len(candidates) < max_candidates:
        candidates.extend(_edge_candidates(grey_full, work, scale, candidates))
    candidates.sort(key=lambda c: c.score, reverse=True)

    def settle(cand: PlateCandidate) -> PlateCandidate | None:
        # An edge region is searched for its glyph row only once it is sure to be kept.
        return cand if cand.method != "edges" else _with_region_row(grey_full, cand, rows)

    return _suppress_overlaps(candidates, max_candidates, settle)


def _ranked_rows(rows: list[tuple[list[Glyph], bool]]) -> list[tuple[float, list[Glyph], bool]]:
    scored = [(_row_score(row), row, dark) for row, dark in rows]
    scored = [item for item in scored if item[0] > 0.02]
    scored.sort(key=lambda item: item[0], reverse=True)
    return scored


def _row_span(row: list[Glyph]) -> Box:
    x0 = min(g.x for g in row)
    y0 = min(g.y for g in row)
    return (x0, y0, max(g.x + g.w for g in row) - x0, max(g.y + g.h for g in row) - y0)


# --- glyph rows -------------------------------------------------------------------


def _binarise(grey: Image) -> list[npt.NDArray[np.uint8]]:
    """Both polarities of a locally thresholded image (glyph pixels = 255)."""
    block = 25 if max(grey.shape) > 400 else 15
    mean = cv2.ADAPTIVE_THRESH_MEAN_C
    dark = cv2.adaptiveThreshold(grey, 255, mean, cv2.THRESH_BINARY_INV, block, 9)
    light = cv2.adaptiveThreshold(grey, 255, mean, cv2.THRESH_BINARY, block, -9)
    return [_u8(dark), _u8(light)]


def _glyphs(binary: npt.NDArray[np.uint8], max_h: int) -> list[Glyph]:
    """Connected components with a character's size, shape and ink density."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    height, width = binary.shape
    x, y, w, h, area = (stats[1:, i].astype(np.int64) for i in range(5))
    keep = (h >= MIN_CHAR_HEIGHT) & (h <= max_h) & (w * 10 <= h * 13) & (h <= 12 * w)
    fill = area / np.maximum(w * h, 1)
    keep &= (fill >= 0.12) & (fill <= 0.92)
    keep &= (x > 0) & (y > 0) & (x + w < width) & (y + h < height)
    picked = zip(x[keep], y[keep], w[keep], h[keep], strict=True)
    return [Glyph(int(a), int(b), int(c), int(d)) for a, b, c, d in picked]


def _link(a: Glyph, b: Glyph) -> bool:
    """Whether b can be the next glyph to the right of a on one plate row."""
    hmax = max(a.h, b.h)
    if abs(a.h - b.h) > 0.22 * hmax:
        return False
    gap = b.x - (a.x + a.w)
    if gap < -0.15 * hmax or gap > 1.6 * hmax:
        return False
    return abs(a.cy - b.cy) < 0.35 * hmax


def _chains(glyphs: list[Glyph]) -> list[list[Glyph]]:
    """Group glyphs into rows: union of neighbour links, then split out outliers."""
    glyphs = sorted(glyphs, key=lambda g: g.x)
    parent = list(range(len(glyphs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(glyphs):
        limit = a.x + a.w + 1.6 * a.h
        for j in range(i + 1, len(glyphs)):
            b = glyphs[j]
            if b.x > limit:
                break
            if _link(a, b):
                parent[find(j)] = find(i)
    groups: dict[int, list[Glyph]] = {}
    for i, g in enumerate(glyphs):
        groups.setdefault(find(i), []).append(g)
    return [_dedupe(g) for g in groups.values() if len(g) >= 3]


def _dedupe(row: list[Glyph]) -> list[Glyph]:
    """Drop glyphs nested inside another one of the row (holes, broken strokes)."""
    row = sorted(row, key=lambda g: g.x)
    out: list[Glyph] = []
    for g in row:
        if out and g.x < out[-1].x + out[-1].w * 0.5:
            if g.h * g.w > out[-1].h * out[-1].w:
                out[-1] = g
            continue
        out.append(g)
    return out


def _row_score(row: list[Glyph]) -> float:
    """How plate-like a glyph row is: count near 5-8, even heights, aligned centres."""
    n = len(row)
    if n < 3:
        return 0.0
    heights = np.array([g.h for g in row], dtype=np.float64)
    hmed = float(np.median(heights))
    xs = np.array([g.cx for g in row])
    ys = np.array([g.cy for g in row])
    slope, icpt = np.polyfit(xs, ys, 1) if n >= 2 else (0.0, float(ys.mean()))
    resid = float(np.abs(ys - (slope * xs + icpt)).mean()) / hmed
    hvar = float(heights.std()) / hmed
    count_fit = {3: 0.35, 4: 0.7, 5: 0.9, 6: 1.0, 7: 1.0, 8: 1.0, 9: 0.85, 10: 0.8}.get(n, 0.3)
    spacing = np.diff(xs) / hmed
    gap_var = float(spacing.std() / max(spacing.mean(), 1e-6))
    tilt = abs(math.atan(slope))
    score = count_fit * math.exp(-4 * resid) * math.exp(-3 * hvar) * math.exp(-0.8 * gap_var)
    score *= math.exp(-1.5 * max(0.0, tilt - 0.2))
    # Larger text is likelier to be the plate a lane camera is framed on.
    score *= min(1.0, 0.6 + hmed / 60.0)
    return score


def _glyph_rows(work: Image, max_h: int | None = None) -> list[tuple[list[Glyph], bool]]:
    """Glyph rows found at full and half work scale (work pixels), each with its polarity.

    The flag is True for dark glyphs on a light plate. Glyphs are at most `max_h` tall (a
    third of the image unless given).
    """
    rows: list[tuple[list[Glyph], bool]] = []
    max_h = max_h or max(MIN_CHAR_HEIGHT + 1, work.shape[0] // 3)
    for binary, dark in zip(_binarise(work), (True, False), strict=True):
        rows.extend((row, dark) for row in _chains(_glyphs(binary, max_h)))
    if min(work.shape[:2]) >= 300:
        size = (work.shape[1] // 2, work.shape[0] // 2)
        half = _u8(cv2.resize(work, size, interpolation=cv2.INTER_AREA))
        for binary, dark in zip(_binarise(half), (True, False), strict=True):
            for row in _chains(_glyphs(binary, max_h // 2)):
                rows.append(([Glyph(g.x * 2, g.y * 2, g.w * 2, g.h * 2) for g in row], dark))
    return rows


# The rectified row band: glyph height plus this share of it above and below.
ROW_PAD_Y = 0.2
# How far beyond the detected glyphs the band is cut, to find glyphs the row missed.
ROW_SEARCH_X = 1.6
# While the row runs on to the band's edge the band is widened that way, this many times
# by this much.
ROW_SEARCH_STEPS = 3
ROW_SEARCH_STEP = 3.2


def _row_candidate(
    grey: Image, scale: float, row: list[Glyph], dark: bool, score: float, *,
    fused: bool = False,
) -> PlateCandidate | None:
    """Rectify one glyph row into a cleaned, upright crop (frame coordinates).

    `fused`: the row may be entirely run into the plate's frame (see `refine_row`).
    """
    inv = 1.0 / scale
    xs = np.array([g.cx for g in row]) * inv
    ys = np.array([g.cy for g in row]) * inv
    hmed = float(np.median([g.h for g in row])) * inv
    slope, icpt = np.polyfit(xs, ys, 1)
    left = min(g.x for g in row) * inv
    right = max(g.x + g.w for g in row) * inv
    px_per_unit = CROP_HEIGHT / (hmed * (1 + 2 * ROW_PAD_Y))
    char_px = hmed * px_per_unit
    pad_left = pad_right = ROW_SEARCH_X * hmed
    for _ in range(ROW_SEARCH_STEPS):
        wide = warp_quad(grey, _row_quad(left - pad_left, right + pad_right, slope, icpt, hmed,
                                         pad_x=0.0, pad_y=ROW_PAD_Y * hmed), normalise=False)
        if wide is None:
            return None
        core = (pad_left * px_per_unit, (pad_left + right - left) * px_per_unit)
        refined = refine_row(wide, dark=dark, core=core, char_height=char_px, fused=fused)
        if refined is None:
            return None
        crop, plain, x0, x1, count, (at_left, at_right) = refined
        # A row that runs on to the band's edge may go on beyond it: search further that way.
        if not (at_left or at_right):
            break
        pad_left += ROW_SEARCH_STEP * hmed * at_left
        pad_right += ROW_SEARCH_STEP * hmed * at_right
    # Map the refined horizontal span back onto the frame for the quad and box.
    left_f = left - pad_left + x0 / px_per_unit
    right_f = left - pad_left + x1 / px_per_unit
    quad = _row_quad(left_f, right_f, slope, icpt, hmed, pad_x=0.0, pad_y=ROW_PAD_Y * hmed)
    box = _plate_box(left_f + 0.2 * hmed, right_f - 0.2 * hmed, slope, icpt, hmed, grey.shape)
    return PlateCandidate(
        box=box, quad=quad, score=score, crop=crop, method="glyphs", glyphs=count, variants=[plain]
    )


class RefinedRow(NamedTuple):
    """A cleaned row band: the crop, its uncleaned twin, their span in the band, the glyph
    count, and whether the row runs on to the band's left and right edges."""

    crop: Image
    plain: Image
    x0: int
    x1: int
    glyphs: int
    runs_on: tuple[bool, bool]


def refine_row(
    wide: Image, *, dark: bool, core: tuple[float, float], char_height: float,
    fused: bool = False,
) -> RefinedRow | None:
    """Clean a rectified row band: keep only the glyphs of the row, blank out the rest.

    Seals, dashes, dots, screws, the country band and text printed above or
    below the registration are all smaller than, or off the line of, the
    registration's glyphs; recognizers read them as extra characters. The band
    is thresholded (Otsu on the detected span), glyph-sized components on the
    centre line are kept, the row is extended outwards over glyphs the
    detector missed, and everything else is painted with the plate's
    background. Glyphs run into the plate's frame are freed by cutting the
    frame's long runs away. Returns the crop cut to the glyphs, its span in the
    band, the glyph count, and whether the row runs on to either end of the
    band. The uncleaned crop comes too: cleaning can erase a glyph merged with
    a seal, so the recognizer may read both.

    A row needs two glyphs standing alone in the detected span, unless `fused`
    (the band lies in a region already taken for a plate): then a row whose
    every glyph runs into the frame is what cutting the frame frees.
    """
    height, width = wide.shape
    c0, c1 = max(0, int(core[0])), min(width, int(core[1]) + 1)
    if c1 - c0 < 4:
        return None
    level, _ = cv2.threshold(wide[:, c0:c1], 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    # Ink is the minority class on the glyph span, whichever detector polarity found the row.
    dark = bool(np.mean(wide[:, c0:c1] <= level) < 0.5)
    text_dark = wide if dark else cv2.bitwise_not(wide)
    level = level if dark else 255 - level
    ink = (text_dark <= level).astype(np.uint8)
    # Only the glyph band counts: the plate's frame and any printed text above or below are
    # cut away, which also separates glyphs that touch the frame.
    mid = height / 2.0
    top = max(0, int(mid - 0.65 * char_height))
    bottom = min(height, int(mid + 0.65 * char_height) + 1)
    ink[:top] = 0
    ink[bottom:] = 0
    count, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    shaped: list[tuple[int, int, int, int]] = []  # (x0, x1, label, height)
    for i in range(1, count):
        x, y, w, h, _ = (int(v) for v in stats[i])
        # Glyphs merged with each other or with a seal are wide: keep them, the recognizer copes.
        if h < 0.6 * char_height or w < max(2.0, 0.1 * char_height) or w > 3 * char_height:
            continue
        if abs(y + h / 2.0 - mid) > 0.25 * char_height:
            continue
        shaped.append((x, x + w, i, h))
    # A component spanning another glyph-sized one is a piece of frame around it, not a glyph.
    framing = {c[2] for c in shaped
               if any(o is not c and c[0] <= o[0] and o[1] <= c[1] for o in shaped)}
    shaped = [c for c in shaped if c[2] not in framing]
    inside = [c for c in shaped if c0 <= (c[0] + c[1]) / 2.0 <= c1]
    kept: list[tuple[int, int, int]] = []
    if len(inside) >= 2:
        kept = [(a, b, i) for a, b, i, _ in inside]
        # Beyond the detected span only clean, single glyphs extend the row: as tall as the
        # row's own glyphs are in this band (blur can make them all taller than the detector
        # saw them).
        row_h = max(char_height, float(np.median([c[3] for c in inside])))
        chars = kept + [(a, b, i) for a, b, i, h in shaped if (a, b, i, h) not in inside
                        and h <= 1.2 * row_h and b - a <= 1.6 * char_height]
        kept = _extend(kept, chars, char_height)
        kept = _claim_merged_lead(kept, np.asarray(stats, dtype=np.int32), char_height, mid)
    elif not fused:
        return None
    keep_mask = np.isin(labels, [c[2] for c in kept]).astype(np.uint8)
    # With every glyph run into the frame, the row is what cutting the frame away frees.
    rescued = _rescue_from_frame(ink, kept, char_height, mid, span=None if kept else (c0, c1))
    if len(kept) + len(rescued) < 2:
        return None
    for rx0, rx1, pixels in rescued:
        keep_mask[pixels] = 1
        kept.append((rx0, rx1, 0))
    x0 = max(0, min(c[0] for c in kept) - int(0.2 * char_height))
    x1 = min(width, max(c[1] for c in kept) + int(0.2 * char_height))
    guard = cv2.dilate(keep_mask, np.ones((3, 3), np.uint8)) > 0
    paint = np.ones_like(guard)
    paint[top:bottom] = False
    kept_labels = {c[2] for c in kept}
    for i in range(1, count):
        if i not in kept_labels:
            x, y, w, h, _ = (int(v) for v in stats[i])
            if i not in framing and any(min(x + w, k[1]) - max(x, k[0]) > 0.5 * w for k in kept):
                continue  # a broken-off piece of a kept glyph
            paint[max(0, y - 2) : y + h + 2, max(0, x - 2) : x + w + 2] = True
    background = float(np.median(text_dark[ink == 0])) if np.any(ink == 0) else 255.0
    cleaned = text_dark.copy()
    cleaned[paint & ~guard] = int(background)
    crop = normalise_contrast(np.ascontiguousarray(cleaned[:, x0:x1]))
    plain = normalise_contrast(np.ascontiguousarray(text_dark[:, x0:x1]))
    # Does the row run on to a band edge: its end glyph within a third of a glyph of it, or cut
    # by it? (A component cut by the edge and wider than a glyph is frame or bodywork.)
    near = 0.3 * char_height
    first, last = min(kept), max(kept, key=lambda c: c[1])
    runs_on = (first[0] < near and (first[0] > 0 or first[1] - first[0] < char_height),
               last[1] > width - near and (last[1] < width or last[1] - last[0] < char_height))
    return RefinedRow(crop, plain, x0, x1, len(kept), runs_on)


def _rescue_from_frame(
    ink: npt.NDArray[np.uint8],
    kept: list[tuple[int, int, int]],
    char_height: float,
    mid: float,
    span: tuple[float, float] | None = None,
) -> list[tuple[int, int, npt.NDArray[np.bool_]]]:
    """Glyphs fused with the plate's frame, freed by cutting the frame's long runs away.

    A glyph touching the frame is part of one huge component, which cleaning paints out. With
    horizontal runs longer than 1.5 glyph heights removed, it stands alone; it is taken only
    if it is a whole glyph, or two fused ones (seal and emblem remnants are smaller), made of
    strokes (a piece of the country strip is mostly ink), lying in a gap of the row or within
    a glyph's gap of its ends (of `span`, for a row that has no glyph of its own yet).
    """
    run = max(3, int(1.5 * char_height))
    lines = cv2.morphologyEx(ink, cv2.MORPH_OPEN,
                             cv2.getStructuringElement(cv2.MORPH_RECT, (run, 1)))
    if not np.any(lines):
        return []
    freed = ink.copy()
    freed[lines > 0] = 0
    count, labels, stats, _ = cv2.connectedComponentsWithStats(freed, connectivity=8)
    pool: list[tuple[int, int, int]] = []
    for i in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[i])
        if not (0.8 * char_height <= h <= 1.2 * char_height
                and 0.25 * char_height <= w <= 2.2 * char_height):
            continue
        if area > 0.6 * w * h:
            continue  # solid: a piece of the country strip or the frame's edge, not strokes
        if abs(y + h / 2.0 - mid) > 0.2 * char_height:
            continue
        if any(min(x + w, k[1]) - max(x, k[0]) > 0.2 * w for k in kept):
            continue  # a glyph the row has already
        pool.append((x, x + w, i))
    # Grow the row one glyph gap at a time: a rescued glyph lets the next one in.
    left, right = span or (min(c[0] for c in kept), max(c[1] for c in kept))
    out: list[tuple[int, int, npt.NDArray[np.bool_]]] = []
    grew = True
    while grew:
        grew = False
        for item in list(pool):
            x0, x1, i = item
            if x1 < left - char_height or x0 > right + char_height:
                continue
            pool.remove(item)
            out.append((x0, x1, labels == i))
            left, right = min(left, x0), max(right, x1)
            grew = True
    return out


def _claim_merged_lead(
    kept: list[tuple[int, int, int]],
    stats: npt.NDArray[np.int32],
    char_height: float,
    mid: float,
) -> list[tuple[int, int, int]]:
    """Take in a first glyph fused with a dark band to its left (the EU country strip).

    The fused blob is too wide for a glyph, so the row stops short of it and the
    plate's first character is lost. Its right-hand glyph-wide part joins the row.
    """
    left = kept[0][0]
    best: tuple[int, int, int] | None = None
    for i in range(1, len(stats)):
        x, y, w, h, _ = (int(v) for v in stats[i])
        if w <= 1.6 * char_height or not 0.8 * char_height <= h <= 1.35 * char_height:
            continue
        if abs(y + h / 2.0 - mid) > 0.25 * char_height:
            continue
        if 0 <= left - (x + w) <= 0.6 * char_height and (best is None or x + w > best[1]):
            best = (x + w - int(0.8 * char_height), x + w, i)
    return kept if best is None else [best, *kept]


def _extend(
    kept: list[tuple[int, int, int]], chars: list[tuple[int, int, int]], char_height: float
) -> list[tuple[int, int, int]]:
    """Grow the row outwards over glyph-sized components within one glyph's gap."""
    kept = sorted(kept)
    rest = sorted(c for c in chars if c not in kept)
    max_gap = 1.0 * char_height
    grew = True
    while grew:
        grew = False
        left, right = kept[0][0], kept[-1][1]
        before = [c for c in rest if c[1] <= left + 2 and left - c[1] <= max_gap]
        after = [c for c in rest if c[0] >= right - 2 and c[0] - right <= max_gap]
        if before:
            pick = max(before, key=lambda c: c[1])
            kept.insert(0, pick)
            rest.remove(pick)
            grew = True
        if after:
            pick = min(after, key=lambda c: c[0])
            kept.append(pick)
            rest.remove(pick)
            grew = True
    # Components inside the span (a glyph split in two, or a missed glyph) belong to the row.
    left, right = kept[0][0], kept[-1][1]
    inner = [c for c in rest if left <= c[0] and c[1] <= right]
    return sorted(kept + inner)


def _row_quad(
    left: float, right: float, slope: float, icpt: float, h: float, *, pad_x: float, pad_y: float
) -> npt.NDArray[np.float32]:
    """Corners of the band of half-height `h/2 + pad_y` around the fitted centre line."""
    angle = math.atan(slope)
    normal = np.array([-math.sin(angle), math.cos(angle)]) * (h / 2.0 + pad_y)
    x0, x1 = left - pad_x, right + pad_x
    p0 = np.array([x0, slope * x0 + icpt])
    p1 = np.array([x1, slope * x1 + icpt])
    n = normal
    quad = np.array([p0 - n, p1 - n, p1 + n, p0 + n], dtype=np.float32)
    return quad


def _plate_box(
    left: float, right: float, slope: float, icpt: float, h: float, shape: Sequence[int]
) -> Box:
    """Estimate the whole plate's box from its character row (plates are ~1.6 glyphs tall)."""
    ys = [slope * left + icpt, slope * right + icpt]
    x0 = left - 0.45 * h
    x1 = right + 0.45 * h
    y0 = min(ys) - 0.8 * h
    y1 = max(ys) + 0.8 * h
    return clip_box(x0, y0, x1, y1, shape)


def clip_box(x0: float, y0: float, x1: float, y1: float, shape: Sequence[int]) -> Box:
    height, width = int(shape[0]), int(shape[1])
    xa, ya = max(0, round(x0)), max(0, round(y0))
    xb, yb = min(width, round(x1)), min(height, round(y1))
    return (xa, ya, max(0, xb - xa), max(0, yb - ya))


def warp_quad(
    grey: Image,
    quad: npt.NDArray[np.float32],
    height: int = CROP_HEIGHT,
    *,
    normalise: bool = True,
    min_width: int | None = None,
    max_width: int | None = None,
) -> Image | None:
    """Warp a quadrilateral upright to `height` pixels, optionally normalising its contrast.

    The crop keeps the quad's aspect within [`min_width`, `max_width`] (default: one to 16
    heights wide).
    """
    top = float(np.linalg.norm(quad[1] - quad[0]))
    side = float(np.linalg.norm(quad[3] - quad[0]))
    if top < 4 or side < 4:
        return None
    low = height if min_width is None else min_width
    high = 16 * height if max_width is None else max_width
    width = max(low, min(round(height * top / side), high))
    corners = [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]]
    dst = np.array(corners, dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), dst)
    crop = _u8(
        cv2.warpPerspective(
            grey, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
        )
    )
    return normalise_contrast(crop) if normalise else crop


_CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(2, 8))


def normalise_contrast(crop: Image) -> Image:
    """Stretch the crop between its 2nd and 98th percentiles, then apply a mild CLAHE."""
    lo, hi = np.percentile(crop, (2, 98))
    if hi - lo < 8:
        return crop
    gain = 255.0 / (hi - lo)
    stretched = np.clip((crop.astype(np.float32) - lo) * gain, 0, 255).astype(np.uint8)
    return _u8(_CLAHE.apply(stretched))


# --- edge-density candidates -------------------------------------------------------


def _edge_candidates(
    grey: Image, work: Image, scale: float, found: list[PlateCandidate]
) -> list[PlateCandidate]:
    """Plate-shaped regions dense in vertical edges, for plates whose glyphs did not separate."""
    kernel_w = max(9, work.shape[1] // 40)
    hat_kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (kernel_w, kernel_w // 3))
    blackhat = cv2.morphologyEx(work, cv2.MORPH_BLACKHAT, hat_kernel)
    tophat = cv2.morphologyEx(work, cv2.MORPH_TOPHAT, hat_kernel)
    grad = np.abs(cv2.Sobel(cv2.max(blackhat, tophat), cv2.CV_32F, 1, 0, ksize=3))
    grad = _u8(grad * (255.0 / max(float(grad.max()), 1e-6)))
    grad = cv2.GaussianBlur(grad, (5, 5), 0)
    close_kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (kernel_w, 3))
    close = cv2.morphologyEx(grad, cv2.MORPH_CLOSE, close_kernel)
    _, mask = cv2.threshold(close, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    square = np.ones((3, 3), np.uint8)
    mask = cv2.dilate(cv2.erode(mask, square, iterations=1), square, iterations=2)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out: list[PlateCandidate] = []
    inv = 1.0 / scale
    for contour in contours:
        (cx, cy), (rw, rh), angle = cv2.minAreaRect(contour)
        if rw < rh:
            rw, rh = rh, rw
            angle += 90.0
        if rh < MIN_CHAR_HEIGHT or rw < 3 * MIN_CHAR_HEIGHT:
            continue
        aspect = rw / rh
        if not 2.0 <= aspect <= 7.0 or abs(((angle + 90) % 180) - 90) > 25:
            continue
        area_ratio = cv2.contourArea(contour) / (rw * rh)
        if area_ratio < 0.45:
            continue
        rect = ((cx * inv, cy * inv), (rw * inv, rh * inv), angle)
        quad = _rect_quad(rect)
        crop = warp_quad(grey, quad)
        if crop is None:
            continue
        x, y, w, h = cv2.boundingRect(quad.astype(np.int32))
        box = clip_box(x, y, x + w, y + h, grey.shape)
        if any(iou(box, c.box) > 0.3 for c in found):
            continue
        score = 0.15 * area_ratio * math.exp(-abs(aspect - 4.0) / 3.0)
        out.append(PlateCandidate(box=box, quad=quad, score=score, crop=crop, method="edges"))
    return out


def _with_region_row(
    grey: Image, cand: PlateCandidate, rows: list[PlateCandidate]
) -> PlateCandidate | None:
    """An edge candidate with the glyph row inside its region as its second rendering; None
    when that row is one of the glyph rows already found."""
    row = _row_in_region(grey, cand.quad)
    if row is None:
        return cand
    if any(iou(row.box, c.box) > 0.3 for c in rows):
        return None
    # The region stays the crop (a part of a row reads more confidently than a whole plate);
    # the row found at the region's own scale, as is and cleaned, is the second look.
    return replace(cand, glyphs=row.glyphs, variants=[*row.variants, row.crop])


# A plate-shaped region is searched for its glyph row at this height (pixels), with this
# share of its size added all round (the region can cut into the first or last glyph).
REGION_HEIGHT = 128
REGION_MARGIN = 0.15


def _row_in_region(grey: Image, quad: npt.NDArray[np.float32]) -> PlateCandidate | None:
    """The best glyph row inside a plate-shaped region, rectified and cleaned (frame
    coordinates), if it has one.

    Glyphs that merged with each other or with the frame at the frame's scale often separate
    once the region alone is thresholded, at a size where they are tens of pixels tall; and
    a row run entirely into the frame is freed by cutting the frame away.
    """
    centre = quad.mean(axis=0)
    grown = (centre + (quad - centre) * (1 + 2 * REGION_MARGIN)).astype(np.float32)
    region = warp_quad(grey, grown, height=REGION_HEIGHT, normalise=False)
    if region is None:
        return None
    # A plate's glyphs are half to three quarters of its height.
    max_h = int(0.8 * REGION_HEIGHT / (1 + 2 * REGION_MARGIN))
    rows = [r for r in _ranked_rows(_glyph_rows(region, max_h)) if len(r[1]) >= 4]
    if not rows:
        return None
    score, row, dark = rows[0]
    found = _row_candidate(region, 1.0, row, dark, score, fused=True)
    if found is None:
        return None
    # Back from the region's pixels to the frame's.
    h, w = region.shape
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float32)
    back = cv2.getPerspectiveTransform(corners, grown)
    quad_f = cv2.perspectiveTransform(found.quad.reshape(-1, 1, 2), back).reshape(-1, 2)
    x, y, bw, bh = found.box
    box_pts = np.array([[x, y], [x + bw, y], [x + bw, y + bh], [x, y + bh]], np.float32)
    box_f = cv2.perspectiveTransform(box_pts.reshape(-1, 1, 2), back).reshape(-1, 2)
    bx0, by0 = box_f.min(axis=0)
    bx1, by1 = box_f.max(axis=0)
    return PlateCandidate(
        box=clip_box(bx0, by0, bx1, by1, grey.shape), quad=quad_f.astype(np.float32),
        score=score, crop=found.crop, method="edges", glyphs=found.glyphs,
        variants=found.variants,
    )


def _rect_quad(
    rect: tuple[tuple[float, float], tuple[float, float], float],
) -> npt.NDArray[np.float32]:
    """The four corners of a rotated rectangle, ordered tl, tr, br, bl."""
    pts = np.asarray(cv2.boxPoints(rect), dtype=np.float32)
    total = pts.sum(axis=1)
    diff = np.diff(pts, axis=1).ravel()
    order = [np.argmin(total), np.argmin(diff), np.argmax(total), np.argmax(diff)]
    return np.array([pts[i] for i in order], dtype=np.float32)


# --- helpers ------------------------------------------------------------------------


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax1, ay1 = a[0] + a[2], a[1] + a[3]
    bx1, by1 = b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _suppress_overlaps(
    candidates: list[PlateCandidate],
    limit: int,
    settle: Callable[[PlateCandidate], PlateCandidate | None] = lambda cand: cand,
) -> list[PlateCandidate]:
    """Keep the best of candidates that cover the same plate (they are sorted best first).

    `settle` finishes a candidate about to be kept, or turns it down (None).
    """
    kept: list[PlateCandidate] = []
    for cand in candidates:
        if any(iou(cand.box, k.box) > 0.5 for k in kept):
            continue
        settled = settle(cand)
        if settled is None:
            continue
        kept.append(settled)
        if len(kept) >= limit:
            break
    return kept
