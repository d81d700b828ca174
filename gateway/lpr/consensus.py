"""Consensus across the frames of one vehicle's passage: one plate from several noisy reads.

A camera sees a car for a second or two; every frame gives one or more reads, each a little
wrong somewhere else (a glare, a motion blur, a bolt taken for a dot). Voting per character,
weighted by the engine's confidence, recovers the plate that no single frame read right.

1. Every read is normalised. The anchor is the text with the most confidence behind it: its
   own reads' and those of reads within one weighted edit (`plates.distance` <= 1) of it.
2. Each frame votes with one read at most: the one closest to the anchor, if it is close
   enough to be a misread of it (other text in the frame, a sign or a second car, is left
   out). Reads of the anchor's length vote position by position with their per-character
   confidences; reads one character longer or shorter are aligned to the anchor by edit
   distance and vote, at half weight, where they line up.
3. Each position keeps the character with the most weight. Its confidence is that weight's
   share of all the votes at the position (a read that disagrees counts against), times the
   mean confidence of the reads that voted for it.
4. Optionally the voted plate is corrected towards a country format (`plates.best_format_reading`).
5. The plate is accepted if its confidence reaches the threshold and no character's falls
   below the character threshold (a plate with one doubtful glyph is a doubtful plate,
   however sure the others are); otherwise the result carries no plate, only the best guess
   and the reason, for the lane to fall back on a person.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.core.plates import (
    MAX_CORRECTION_COST,
    PlateFormat,
    best_format_reading,
    distance,
    normalize_read,
)

__all__ = [
    "DEFAULT_CHAR_THRESHOLD", "DEFAULT_THRESHOLD", "Consensus", "PlateRead", "edit_table", "vote",
]

Box = tuple[int, int, int, int]  # x, y, w, h in the frame's pixels

DEFAULT_THRESHOLD = 0.6
# The least confidence any one character of an accepted plate may have. Measured on 1,451
# real photos (docs/lpr.md): the mean alone at 0.6 took 9.5% of them wrong, this floor
# 2.3%, at the cost of asking a person about a fifth of the plates it read right.
DEFAULT_CHAR_THRESHOLD = 0.8
OFF_LENGTH_WEIGHT = 0.5  # a read of another length is less sure to line up
# The reader ranks a frame's candidates with more than OCR confidence (plate shape, format):
# its second choice weighs half as much as its first when the anchor is chosen.
RANK_DISCOUNT = 0.5


@dataclass(frozen=True, slots=True)
class PlateRead:
    """One plate candidate of one frame, as the reader gave it, in plain values."""

    text: str
    confidence: float
    char_confidences: tuple[float, ...]
    box: Box
    frame: int  # index of the frame within the passage
    crop_png: bytes | None = None
    rank: int = 0  # the reader's own ranking within the frame, 0 for its best

    @property
    def weight(self) -> float:
        """Confidence, discounted for candidates the reader itself ranked lower."""
        return self.confidence * RANK_DISCOUNT**self.rank


@dataclass(frozen=True, slots=True)
class Consensus:
    """What the frames of one passage agree on.

    `plate` is None when no read survived or the confidence is below the threshold; then
    `guess` holds the best plate there was and `reason` says why it was not taken.
    """

    plate: str | None
    confidence: float
    guess: str | None
    char_confidences: tuple[float, ...] = ()
    box: Box | None = None
    crop_png: bytes | None = None
    frames_agreeing: int = 0  # frames with a read equal to the plate (or the guess)
    frames_with_reads: int = 0
    format: str | None = None  # the format the plate fits, if it was checked against formats
    corrected_from: str | None = None  # the voted text, when format correction changed it
    reason: str | None = None


@dataclass(slots=True)
class _Votes:
    """Weight (and number of voters) per character at each position of the winning length."""

    length: int
    weight: list[defaultdict[str, float]] = field(default_factory=list)
    voters: list[defaultdict[str, float]] = field(default_factory=list)
    total: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.weight = [defaultdict(float) for _ in range(self.length)]
        self.voters = [defaultdict(float) for _ in range(self.length)]
        self.total = [0.0] * self.length

    def add(self, position: int, char: str, confidence: float, factor: float = 1.0) -> None:
        self.weight[position][char] += factor * confidence
        self.voters[position][char] += factor

    def cover(self, position: int, weight: float) -> None:
        """A read that could have voted at `position` counts in its total, agree or not."""
        self.total[position] += weight


def _normalized(reads: Sequence[PlateRead]) -> list[tuple[str, tuple[float, ...], PlateRead]]:
    out = []
    for read in reads:
        confs_given = read.char_confidences or (read.confidence,) * len(read.text)
        plate, confs = normalize_read(read.text, confs_given)
        if plate:
            out.append((plate, confs, read))
    return out


def edit_table(source: str, target: str) -> list[list[int]]:
    """Unit-cost edit distances between every prefix of source and every prefix of target."""
    rows, cols = len(source) + 1, len(target) + 1
    cost = [[0] * cols for _ in range(rows)]
    for i in range(rows):
        cost[i][0] = i
    for j in range(cols):
        cost[0][j] = j
    for i in range(1, rows):
        for j in range(1, cols):
            cost[i][j] = min(cost[i - 1][j] + 1, cost[i][j - 1] + 1,
                             cost[i - 1][j - 1] + (source[i - 1] != target[j - 1]))
    return cost


def _unit_distance(a: str, b: str) -> int:
    return edit_table(a, b)[-1][-1]


def _alignment(source: str, target: str) -> list[tuple[int, int]]:
    """(source index, target index) pairs that line up in a unit-cost edit alignment."""
    cost = edit_table(source, target)
    pairs: list[tuple[int, int]] = []
    i, j = len(source), len(target)
    while i and j:
        if cost[i][j] == cost[i - 1][j - 1] + (source[i - 1] != target[j - 1]):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def _anchor(usable: list[tuple[str, tuple[float, ...], PlateRead]]) -> str:
    """The text the reads gather around: most confidence within one weighted edit of it."""
    support: defaultdict[str, float] = defaultdict(float)
    texts = {plate for plate, _, _ in usable}
    for text in texts:
        for plate, _, read in usable:
            if plate == text or distance(plate, text, limit=1.0) <= 1.0:
                support[text] += read.weight
    best_read = {plate: max(r.weight for p, _, r in usable if p == plate) for plate in texts}
    return max(texts, key=lambda t: (support[t], best_read[t], t))


def _one_per_frame(
    usable: list[tuple[str, tuple[float, ...], PlateRead]], anchor: str
) -> list[tuple[str, tuple[float, ...], PlateRead]]:
    """Each frame's read closest to the anchor, if it is close enough to be the same plate.

    A frame may hold other text (a second car, a sign, a sticker): only one read per frame
    votes, and none that is too far from the anchor to be a misread of it.
    """
    allowed = max(2, len(anchor) // 3)
    chosen: dict[int, tuple[int, float, tuple[str, tuple[float, ...], PlateRead]]] = {}
    for item in usable:
        plate, _, read = item
        gap = _unit_distance(plate, anchor)
        if gap > allowed:
            continue
        key = (gap, -read.weight)
        if read.frame not in chosen or key < chosen[read.frame][:2]:
            chosen[read.frame] = (*key, item)
    return [item for _, _, item in chosen.values()]


def vote(
    reads: Sequence[PlateRead],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    formats: Sequence[PlateFormat] = (),
    max_correction_cost: float = MAX_CORRECTION_COST,
    char_threshold: float = 0.0,
) -> Consensus:
    """One plate from the reads of all frames of a passage (see the module's docstring).

    With `formats`, the voted plate is corrected towards the best fitting one, if any fits
    within `max_correction_cost`; a plate that fits none is kept as voted. `char_threshold`
    is the floor for each character (none by default; the lane's worker passes
    `lpr.min_char_confidence`, by default DEFAULT_CHAR_THRESHOLD).
    """
    usable = _normalized(reads)
    if not usable:
        return Consensus(None, 0.0, None, reason="no_read")
    # The first vote is taken around the best supported read; the second around the first
    # vote's result, which is nearer the truth than any one noisy read.
    voted, confidences = _vote_around(_anchor(usable), usable)
    voted, confidences = _vote_around(voted, usable)
    return _finish(voted, confidences, usable, (threshold, char_threshold), formats,
                   max_correction_cost)


def _vote_around(
    anchor: str, usable: list[tuple[str, tuple[float, ...], PlateRead]]
) -> tuple[str, tuple[float, ...]]:
    voters = _one_per_frame(usable, anchor)
    length = len(anchor)
    votes = _Votes(length)
    for plate, confs, read in voters:
        if len(plate) == length:
            for pos, (ch, conf) in enumerate(zip(plate, confs, strict=True)):
                votes.add(pos, ch, conf)
                votes.cover(pos, conf)
        elif abs(len(plate) - length) == 1:
            for src, dst in _alignment(plate, anchor):
                votes.add(dst, plate[src], confs[src], OFF_LENGTH_WEIGHT)
            for pos in range(length):
                votes.cover(pos, OFF_LENGTH_WEIGHT * read.confidence)
    # A frame whose every read is far from the anchor saw something else: that counts
    # against the plate, at a discount (it may have seen only a sign).
    voting_frames = {read.frame for _, _, read in voters}
    dissent: dict[int, float] = {}
    for _, _, read in usable:
        if read.frame not in voting_frames:
            dissent[read.frame] = max(dissent.get(read.frame, 0.0), read.confidence)
    for pos in range(length):
        votes.cover(pos, OFF_LENGTH_WEIGHT * sum(dissent.values()))

    chars: list[str] = []
    confidences: list[float] = []
    for pos in range(length):
        ch, weight = max(votes.weight[pos].items(), key=lambda item: (item[1], item[0]))
        chars.append(ch)
        share = min(1.0, weight / votes.total[pos]) if votes.total[pos] else 0.0
        # The share of the vote, scaled by how sure the winners were on average.
        confidences.append(share * min(1.0, weight / votes.voters[pos][ch]))
    return "".join(chars), tuple(confidences)


def _finish(
    voted: str,
    confidences: tuple[float, ...],
    usable: list[tuple[str, tuple[float, ...], PlateRead]],
    thresholds: tuple[float, float],
    formats: Sequence[PlateFormat],
    max_correction_cost: float,
) -> Consensus:
    plate, fmt, corrected_from = voted, None, None
    if formats:
        correction = best_format_reading([(voted, confidences)], formats,
                                         max_cost=max_correction_cost)
        if correction is not None:
            plate, fmt = correction.text, correction.format
            confidences = correction.char_confidences
            corrected_from = voted if correction.changed else None
    confidence = sum(confidences) / len(confidences)
    agreeing = {read.frame for p, _, read in usable if p == plate}
    frames = {read.frame for _, _, read in usable}
    # The crop shown for the plate: the surest read that agrees, else the surest read at all.
    shown = max((u for u in usable if u[0] == plate), key=lambda u: u[2].confidence,
                default=max(usable, key=lambda u: u[2].confidence))[2]
    accepted = confidence >= thresholds[0] and min(confidences) >= thresholds[1]
    return Consensus(
        plate=plate if accepted else None,
        confidence=round(confidence, 4),
        guess=plate,
        char_confidences=tuple(round(c, 4) for c in confidences),
        box=shown.box,
        crop_png=shown.crop_png,
        frames_agreeing=len(agreeing),
        frames_with_reads=len(frames),
        format=fmt,
        corrected_from=corrected_from,
        reason=None if accepted else "low_confidence",
    )
