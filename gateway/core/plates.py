"""Plate text: normalisation, country formats, the confusables table, format correction, matching.

Pure functions on plain strings: no I/O, no model, no clock.

One table of confusable characters (`CONFUSABLES`) serves two jobs:

* **correction towards a valid format**: an OCR read of ``"AB0123"`` where the format wants a
  letter in the third place becomes ``"ABO123"`` (`best_format_reading`), at a cost;
* **fuzzy matching**: a read plate is compared with the plates of permits, reservations and open
  sessions by a weighted edit distance in which a confusable substitution is cheap and any other
  edit costs 1 (`distance`, `match`).

Each pair has a cost in (0, 1): the lower, the more alike the two glyphs are on a plate. The
table holds the pairs OCR engines and plate fonts really mix up (FE-Schrift, Mandatory, Charles
Wright, Mercosul): 0/O (the same glyph in many fonts), 1/I, 8/B, 5/S, 2/Z, then 0/D, 0/Q, O/D, O/Q,
6/G, 7/T, 4/A. Letter/letter pairs (O/D, O/Q, D/Q) help only matching; digit/letter pairs help
both. Pairs such as 1/L, 3/B or U/V are left out: they would make distinct permit plates look
alike more often than they rescue a read.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

__all__ = [
    "CONFUSABLES",
    "DEFAULT_FORMATS",
    "DEFAULT_FORMAT_GROUPS",
    "DEFAULT_MAX_DISTANCE",
    "FORMAT_GROUPS",
    "MAX_CORRECTION_COST",
    "Correction",
    "Mask",
    "Match",
    "MatchOutcome",
    "PlateFormat",
    "best_format_reading",
    "confusable_cost",
    "distance",
    "formats_for",
    "is_valid",
    "mask_classes",
    "match",
    "matching_formats",
    "normalize",
    "normalize_read",
    "within_one_confusable",
]

# --- normalisation ------------------------------------------------------------------------


_NORMAL = re.compile(r"[A-Z0-9]*")


def normalize(text: str) -> str:
    """Upper case, A-Z and 0-9 only: spaces, dashes, dots and separators on a plate are dropped.

    Accented letters lose their accent (``"Ö"`` -> ``"O"``), so a read never depends on how an
    OCR engine or a backend spelt a letter with a diacritic.
    """
    if _NORMAL.fullmatch(text):  # the common case, and matching thousands of permits needs it
        return text
    decomposed = unicodedata.normalize("NFKD", text.upper())
    return "".join(ch for ch in decomposed if ("A" <= ch <= "Z") or ("0" <= ch <= "9"))


def normalize_read(
    text: str, confidences: Sequence[float]
) -> tuple[str, tuple[float, ...]]:
    """Normalise a read and keep each surviving character's confidence beside it.

    When the engine gave no per-character confidences of the right length, every character gets
    the mean of what was given (1.0 for none), which is the best that can be said.
    """
    if len(confidences) != len(text):
        fill = sum(confidences) / len(confidences) if confidences else 1.0
        plate = normalize(text)
        return plate, tuple(fill for _ in plate)
    chars: list[str] = []
    kept: list[float] = []
    for ch, conf in zip(text, confidences, strict=True):
        norm = normalize(ch)
        chars.append(norm)
        kept.extend(conf for _ in norm)
    return "".join(chars), tuple(kept)


# --- confusables --------------------------------------------------------------------------

# (a, b, cost): a and b may be read for each other; cost in (0, 1) is the price of doing so.
_CONFUSABLE_PAIRS: tuple[tuple[str, str, float], ...] = (
    ("0", "O", 0.2),
    ("1", "I", 0.2),
    ("8", "B", 0.3),
    ("5", "S", 0.3),
    ("2", "Z", 0.3),
    ("0", "D", 0.4),
    ("0", "Q", 0.4),
    ("O", "D", 0.4),
    ("O", "Q", 0.3),
    ("D", "Q", 0.5),
    ("6", "G", 0.4),
    ("7", "T", 0.5),
    ("4", "A", 0.5),
)

CONFUSABLES: Mapping[tuple[str, str], float] = {
    **{(a, b): cost for a, b, cost in _CONFUSABLE_PAIRS},
    **{(b, a): cost for a, b, cost in _CONFUSABLE_PAIRS},
}
"""Cost of reading one character for another, both directions; absent pairs cost 1."""


def confusable_cost(a: str, b: str) -> float:
    """The price of substituting `b` for `a`: 0 if equal, the table's cost, else 1."""
    if a == b:
        return 0.0
    return CONFUSABLES.get((a, b), 1.0)


# --- formats ------------------------------------------------------------------------------

CharClass = Literal["L", "N", "A"]
_CLASS_TEST = {"L": str.isalpha, "N": str.isdigit, "A": str.isalnum}
_CLASS_REGEX = {"L": "[A-Z]", "N": "[0-9]", "A": "[A-Z0-9]"}
_MASK_TOKEN = re.compile(r"([LNA]|\[[A-Z0-9]+\])(?:\{(\d+)(?:,(\d+))?\})?")
_MAX_MASKS = 256  # a mask that expands beyond this is a mistake, not a format


Mask = tuple[str, ...]
"""A fixed-length mask: a token per position, a class (L, N, A) or a list (``"[EH]"``)."""


def _fits(ch: str, token: str) -> bool:
    """Whether a plate character fits one position of a fixed-length mask."""
    test = _CLASS_TEST.get(token)
    return test(ch) if test is not None else ch in token[1:-1]


def mask_classes(mask: Mask) -> str:
    """A fixed-length mask with its lists as their classes: ``("L", "N", "[EH]")`` -> ``"LNL"``."""
    return "".join(token if token in _CLASS_TEST else _list_class(token[1:-1]) for token in mask)


def _list_class(listed: str) -> str:
    return "N" if listed.isdigit() else "L" if listed.isalpha() else "A"


def _expand_mask(mask: str) -> tuple[Mask, ...]:
    """Fixed-length masks from a mask with repeats: ``"L{1,2}N"`` -> ``(LN, LLN)``.

    L is a letter, N a digit, A either, ``[EH]`` one of the characters listed; ``{m}`` or
    ``{m,n}`` repeats what comes before it.
    """
    pos = 0
    pieces: list[tuple[str, int, int]] = []
    while pos < len(mask):
        token = _MASK_TOKEN.match(mask, pos)
        if token is None:
            raise ValueError(f"mask {mask!r}: unexpected {mask[pos]!r} at {pos}; use L, N, A,"
                             " [listed characters] and {m} or {m,n} repeats")
        cls, low, high = token.group(1), token.group(2), token.group(3)
        lo = int(low) if low is not None else 1
        hi = int(high) if high is not None else lo
        if not 0 <= lo <= hi or hi == 0:
            raise ValueError(f"mask {mask!r}: bad repeat {token.group(0)!r}")
        pieces.append((cls, lo, hi))
        pos = token.end()
    if not pieces:
        raise ValueError("empty mask")
    masks: list[Mask] = [()]
    for cls, lo, hi in pieces:
        masks = [m + (cls,) * n for m in masks for n in range(lo, hi + 1)]
        if len(masks) > _MAX_MASKS:
            raise ValueError(f"mask {mask!r} expands to more than {_MAX_MASKS} lengths")
    return tuple(dict.fromkeys(masks))


@dataclass(frozen=True, slots=True)
class PlateFormat:
    """One plate pattern of one country, as a class mask (``"LLLNLNN"``) or a regex.

    A mask also drives correction: each position says whether a letter or a digit belongs
    there. A regex (matched against the whole normalised plate) only validates. A `generic`
    format validates but never drives correction: it is too loose to say what a character
    should be.
    """

    name: str
    country: str
    mask: str | None = None
    regex: str | None = None
    generic: bool = False
    masks: tuple[Mask, ...] = field(init=False, repr=False, compare=False)
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.mask is None) == (self.regex is None):
            raise ValueError(f"format {self.name!r}: give exactly one of mask and regex")
        if self.mask is not None:
            masks = _expand_mask(self.mask)
            source = "|".join("".join(_CLASS_REGEX.get(t, t) for t in m) for m in masks)
        else:
            masks = ()
            source = str(self.regex)
        try:
            compiled = re.compile(f"(?:{source})")
        except re.error as exc:
            raise ValueError(f"format {self.name!r}: bad regex: {exc}") from None
        object.__setattr__(self, "masks", masks)
        object.__setattr__(self, "_compiled", compiled)

    def matches(self, plate: str) -> bool:
        """Whether a normalised plate has this format."""
        return self._compiled.fullmatch(plate) is not None

    def masks_of_length(self, length: int) -> tuple[Mask, ...]:
        """The fixed masks of one length that correction may aim at (none for a generic one)."""
        if self.generic:
            return ()
        return tuple(m for m in self.masks if len(m) == length)


def _fmt(name: str, country: str, mask: str, *, generic: bool = False) -> PlateFormat:
    return PlateFormat(name, country, mask=mask, generic=generic)


# The voivodeship letters that begin a Polish district code.
_PL = "[BCDEFGKLNOPRSTWZ]"

# Normalised plates only (no spaces, dashes or seals). Sources: each country's registration
# rules; where a country has several current series, the common ones are listed.
FORMAT_GROUPS: Mapping[str, tuple[PlateFormat, ...]] = {
    "us": (
        _fmt("us-3l4n", "US", "LLLNNNN"),  # NY, PA, TX, GA, NC, OH, MI, VA, ...
        _fmt("us-ca", "US", "NLLLNNN"),  # California, since 1980
        _fmt("us-3l3n", "US", "LLLNNN"),  # many states' older series
        _fmt("us-3n3l", "US", "NNNLLL"),
        _fmt("us-1n2l4n", "US", "NLLNNNN"),  # e.g. Illinois
        _fmt("us-generic", "US", "A{2,8}", generic=True),  # vanity plates
    ),
    "de": (
        # District (1-3 letters), 1-2 letters, 1-4 digits, optional E (electric) or H (historic).
        _fmt("de", "DE", "L{1,3}L{1,2}N{1,4}"),
        _fmt("de-eh", "DE", "L{1,3}L{1,2}N{1,3}[EH]"),
    ),
    "fr": (_fmt("fr-siv", "FR", "LLNNNLL"),),  # AB-123-CD, since 2009
    "it": (_fmt("it", "IT", "LLNNNLL"),),  # AB 123 CD, since 1994
    "es": (_fmt("es", "ES", "NNNNLLL"),),  # 1234 BCD, since 2000
    "nl": (  # sidecodes 4 to 11
        _fmt("nl-6", "NL", "NNLLLN"),
        _fmt("nl-7", "NL", "NLLLNN"),
        _fmt("nl-8", "NL", "LLNNNL"),
        _fmt("nl-9", "NL", "LNNNLL"),
        _fmt("nl-10", "NL", "LLLNNL"),
        _fmt("nl-11", "NL", "NLLNNN"),
        _fmt("nl-4", "NL", "LLLLNN"),
        _fmt("nl-5", "NL", "NNLLLL"),
    ),
    "pl": (
        # Two-letter district and five characters, or three letters and four or five; the
        # common series only (the rest validate through eu-generic). The district's first
        # letter is its voivodeship's.
        _fmt("pl-2-5n", "PL", f"{_PL}LNNNNN"),
        _fmt("pl-2-4n1l", "PL", f"{_PL}LNNNNL"),
        _fmt("pl-2-3n2l", "PL", f"{_PL}LNNNLL"),
        _fmt("pl-2-1n1l3n", "PL", f"{_PL}LNLNNN"),
        _fmt("pl-3-1l3n", "PL", f"{_PL}LLLNNN"),
        _fmt("pl-3-2n2l", "PL", f"{_PL}LLNNLL"),
        _fmt("pl-3-1n1l2n", "PL", f"{_PL}LLNLNN"),
        _fmt("pl-3-5n", "PL", f"{_PL}LLNNNNN"),
    ),
    "cz": (  # 1A2 3456 and 1AB 2345: region digit, letter, letter or digit, four digits
        _fmt("cz", "CZ", "NLANNNN"),
    ),
    "sk": (_fmt("sk", "SK", "LLNNNLL"),),  # BA 123 AB, since 1997
    "eu": (
        _fmt("eu-generic", "EU", "A{4,8}", generic=True),
    ),
    "uk": (
        _fmt("uk", "UK", "LLNNLLL"),  # AB12 CDE, since 2001
        _fmt("uk-prefix", "UK", "LN{1,3}LLL"),  # A123 BCD, 1983-2001
        _fmt("uk-suffix", "UK", "LLLN{1,3}L"),  # ABC 123D, 1963-1983
    ),
    "br": (
        _fmt("br-old", "BR", "LLLNNNN"),  # ABC-1234, before Mercosul
        _fmt("br-mercosul", "BR", "LLLNLNN"),  # ABC1D23, since 2018
    ),
    "ar": (
        _fmt("ar-old", "AR", "LLLNNN"),  # ABC 123, 1995-2016
        _fmt("ar-mercosur", "AR", "LLNNNLL"),  # AB 123 CD, since 2016
        # Motorcycles, in two rows read top first: 123 over ABC, then A12 over 3BCD.
        _fmt("ar-moto-old", "AR", "NNNLLL"),
        _fmt("ar-moto-mercosur", "AR", "LNNNLLL"),
    ),
    "in": (
        # State (2 letters), district (1-2 digits), series (0-3 letters), number (1-4 digits).
        _fmt("in", "IN", "LLN{1,2}L{0,3}N{1,4}"),
        _fmt("in-bh", "IN", "NNLLNNNNLL"),  # Bharat series: 22 BH 1234 AB
    ),
}
"""Shipped formats by region code; ``eu`` also takes in de, fr, it, es, nl, pl, cz and sk."""

_REGION_PARTS: Mapping[str, tuple[str, ...]] = {
    "eu": ("de", "fr", "it", "es", "nl", "pl", "cz", "sk", "eu")}

DEFAULT_FORMAT_GROUPS: tuple[str, ...] = ("eu", "uk", "us", "br", "in")


def formats_for(entries: Iterable[str]) -> tuple[PlateFormat, ...]:
    """The formats a configuration names, in its order (earlier ones win ties in correction).

    An entry is a region code of `FORMAT_GROUPS` (``"eu"`` takes in all shipped EU countries),
    or a lot's own format as ``"name=MASK"`` (``"fleet=LLNNNN"``) or ``"name=/REGEX/"``.
    Raises ValueError naming the bad entry.
    """
    chosen: dict[str, PlateFormat] = {}
    for entry in entries:
        key = entry.strip()
        if "=" in key:
            fmt = _custom_format(key)
            chosen[fmt.name] = fmt
            continue
        key = key.lower()
        if key not in FORMAT_GROUPS:
            known = ", ".join(sorted(FORMAT_GROUPS))
            raise ValueError(f"unknown plate format group {entry!r} (shipped: {known};"
                             " or give name=MASK)")
        for part in _REGION_PARTS.get(key, (key,)):
            for fmt in FORMAT_GROUPS[part]:
                chosen.setdefault(fmt.name, fmt)
    return tuple(chosen.values())


def _custom_format(entry: str) -> PlateFormat:
    name, _, pattern = (part.strip() for part in entry.partition("="))
    if not name or not pattern:
        raise ValueError(f"plate format {entry!r}: give name=MASK or name=/REGEX/")
    try:
        if len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/"):
            return PlateFormat(name, "custom", regex=pattern[1:-1])
        return PlateFormat(name, "custom", mask=pattern)
    except ValueError as exc:
        raise ValueError(f"plate format {entry!r}: {exc}") from None


DEFAULT_FORMATS: tuple[PlateFormat, ...] = formats_for(DEFAULT_FORMAT_GROUPS)


def matching_formats(plate: str, formats: Sequence[PlateFormat] = DEFAULT_FORMATS) -> list[str]:
    """Names of the formats a plate fits (after normalisation)."""
    norm = normalize(plate)
    return [fmt.name for fmt in formats if fmt.matches(norm)]


def is_valid(plate: str, formats: Sequence[PlateFormat] = DEFAULT_FORMATS) -> bool:
    """Whether a plate fits any of the formats, generic ones included."""
    return bool(matching_formats(plate, formats))


# --- correction towards a format ----------------------------------------------------------

def _stand_ins() -> dict[tuple[str, str], tuple[str, float]]:
    """(character, class wanted) -> its cheapest confusable of that class, and the cost."""
    best: dict[tuple[str, str], tuple[str, float]] = {}
    for (a, b), cost in CONFUSABLES.items():
        wanted = "N" if b.isdigit() else "L"
        if a.isdigit() == b.isdigit():
            continue  # same class: never needed to fit a mask
        if (a, wanted) not in best or cost < best[(a, wanted)][1]:
            best[(a, wanted)] = (b, cost)
    return best


_STAND_IN: Mapping[tuple[str, str], tuple[str, float]] = _stand_ins()


@lru_cache(maxsize=4096)
def _stand_in(ch: str, token: str) -> tuple[str, float] | None:
    """The cheapest confusable of `ch` that fits a mask token, and its cost; None if none.

    For a list only the listed characters' own confusables stand in for them.
    """
    if token in _CLASS_TEST:
        return _STAND_IN.get((ch, token))
    swaps = [(c, CONFUSABLES[(ch, c)]) for c in token[1:-1] if (ch, c) in CONFUSABLES]
    return min(swaps, key=lambda pair: pair[1], default=None)

MAX_CORRECTION_COST = 1.0
"""Default bound on a correction's summed cost: e.g. three 0/O swaps, or two 8/B."""


@dataclass(frozen=True, slots=True)
class Correction:
    """A read made to fit a format, and what that took."""

    text: str  # the corrected, normalised plate
    read: str  # the read it came from, normalised
    format: str  # the format's name
    cost: float  # summed confusable costs; 0 when the read already fitted
    substitutions: tuple[tuple[int, str, str], ...]  # (position, read, corrected)
    char_confidences: tuple[float, ...]
    confidence: float  # mean of char_confidences, substituted ones discounted by their cost

    @property
    def changed(self) -> bool:
        return bool(self.substitutions)


Alternatives = Sequence[Sequence[tuple[str, float]]]
"""Per character of a read, the symbols the recognizer also saw there, with their probabilities."""

# A network's own runner-up costs this much (times its doubt and the read's confidence) to
# put in a read's place where the format wants the other class: an L that a font's open 4
# looks like to a network costs about 0.5 in a US plate's first position.
ALTERNATIVE_COST = 0.5


def _fit(plate: str, confs: Sequence[float], mask: Mask, alts: Alternatives | None = None
         ) -> tuple[str, float, tuple[tuple[int, str, str], ...], tuple[float, ...]] | None:
    """Fit a read to one mask: a character of the wrong class is replaced by its confusable
    stand-in, or by the recognizer's own most likely character of the wanted class
    (`alts`), whichever keeps the more confidence."""
    chars: list[str] = []
    kept: list[float] = []
    subs: list[tuple[int, str, str]] = []
    cost = 0.0
    for i, (ch, token, conf) in enumerate(zip(plate, mask, confs, strict=True)):
        if _fits(ch, token):
            chars.append(ch)
            kept.append(conf)
            continue
        # (kept confidence, cost, character) of each way to fit; the surest wins.
        options: list[tuple[float, float, str]] = []
        stand_in = _stand_in(ch, token)
        if stand_in is not None:
            new, pair_cost = stand_in
            # A confident read costs more to overrule than a doubtful one.
            options.append((conf * (1.0 - pair_cost), pair_cost * (0.5 + 0.5 * conf), new))
        if alts is not None:
            seen = [(p, a) for a, p in alts[i] if a != ch and _fits(a, token)]
            if seen:
                p, a = max(seen)
                # How sure the network is of `a` among what the format allows there: the
                # one digit it saw under an L is the plate's digit. The format overruled
                # the network, though, so the character is never trusted beyond one half
                # (a lane's floor turns it over to a person).
                given = p / max(sum(q for q, _ in seen), 1e-9)
                options.append((given * (1.0 - ALTERNATIVE_COST),
                                ALTERNATIVE_COST * (1.0 - p) * (0.5 + 0.5 * conf), a))
        if not options:
            return None
        keep, step, new = max(options)
        chars.append(new)
        cost += step
        kept.append(keep)
        subs.append((i, ch, new))
    return "".join(chars), cost, tuple(subs), tuple(kept)


def best_format_reading(
    candidates: Sequence[tuple[str, Sequence[float]]],
    formats: Sequence[PlateFormat] = DEFAULT_FORMATS,
    *,
    max_cost: float = MAX_CORRECTION_COST,
    alternatives: Sequence[Alternatives | None] = (),
) -> Correction | None:
    """The most credible reading that fits a format, or None when none fits within `max_cost`.

    `candidates` are OCR reads with their per-character confidences (several engines, several
    boxes, or a consensus). Each is fitted to every non-generic mask of its length: a letter
    where a digit belongs (or the reverse) is swapped for its confusable stand-in, or for the
    recognizer's own best guess of the wanted class where `alternatives` gives the
    candidate's (one entry per candidate, None for none), at a cost.
    The winner has the highest confidence after the discount; ties go to the lower cost, then
    to the earlier format. A read that already fits costs 0. Generic formats never correct.
    """
    best: tuple[float, float, int, Correction] | None = None
    for k, (text, char_confs) in enumerate(candidates):
        plate, confs = normalize_read(text, char_confs)
        if not plate:
            continue
        alts = alternatives[k] if k < len(alternatives) else None
        if alts is not None and (len(alts) != len(plate) or plate != text):
            alts = None  # normalising changed the read: its evidence no longer lines up
        for rank, fmt in enumerate(formats):
            for mask in fmt.masks_of_length(len(plate)):
                fitted = _fit(plate, confs, mask, alts)
                if fitted is None or fitted[1] > max_cost + 1e-9:
                    continue
                corrected, cost, subs, kept = fitted
                confidence = round(sum(kept) / len(kept), 6)
                key = (confidence, -cost, -rank)
                if best is None or key > best[:3]:
                    best = (*key, Correction(corrected, plate, fmt.name, round(cost, 6), subs,
                                             kept, confidence))
    return None if best is None else best[3]


# --- fuzzy distance and matching ----------------------------------------------------------


def distance(a: str, b: str, *, limit: float = math.inf) -> float:
    """Weighted edit distance: confusable substitutions cost their table cost, other edits 1.

    Both plates are normalised first. With a `limit`, work stops as soon as the distance is
    known to exceed it, and infinity is returned.
    """
    return _distance(normalize(a), normalize(b), limit)


def _confusable_classes() -> dict[int, str]:
    """str.translate table: every character to one representative of its confusable group."""
    groups: dict[str, set[str]] = {}
    for a, b in CONFUSABLES:
        merged = groups.get(a, {a}) | groups.get(b, {b})
        for ch in merged:
            groups[ch] = merged
    return {ord(ch): min(group) for ch, group in groups.items()}


_CLASS_OF = _confusable_classes()


@lru_cache(maxsize=65536)  # the known plates of a lot repeat from one read to the next
def _signature(plate: str) -> int:
    """A bit per confusable group present in the plate."""
    mask = 0
    for ch in plate.translate(_CLASS_OF):
        mask |= 1 << (ord(ch) - 48)
    return mask


def _lower_bound(a: str, b: str) -> int:
    """Edits costing 1 that any alignment of a and b needs: character groups with no twin.

    A group present in one plate and absent from the other leaves at least one character
    that only an insertion, deletion or non-confusable substitution (cost 1 each) can place,
    and each such edit places at most one character of each side.
    """
    sa, sb = _signature(a), _signature(b)
    return max((sa & ~sb).bit_count(), (sb & ~sa).bit_count())


def _distance(a: str, b: str, limit: float) -> float:
    if abs(len(a) - len(b)) > limit or _lower_bound(a, b) > limit:
        return math.inf
    previous = [float(j) for j in range(len(b) + 1)]
    for i, ca in enumerate(a, start=1):
        current = [float(i)]
        low = current[0]
        for j, cb in enumerate(b, start=1):
            sub = previous[j - 1] if ca == cb else previous[j - 1] + CONFUSABLES.get((ca, cb), 1.0)
            cell = min(previous[j] + 1.0, current[j - 1] + 1.0, sub)
            current.append(cell)
            low = min(low, cell)
        if low > limit:
            return math.inf
        previous = current
    return previous[-1]


MatchOutcome = Literal["exact", "fuzzy", "ambiguous", "none"]

_TIE = 1e-9


@dataclass(frozen=True, slots=True)
class Match:
    """How a read plate relates to the known plates.

    `plate` is the known plate to act on; it is set only for ``exact`` and ``fuzzy``.
    `candidates` holds every known plate at the best distance (two or more when ambiguous).
    """

    outcome: MatchOutcome
    read: str
    plate: str | None = None
    distance: float | None = None
    candidates: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        """Whether a lane may act on `plate` without a person: exact or unambiguous fuzzy."""
        return self.outcome in ("exact", "fuzzy")


DEFAULT_MAX_DISTANCE = 1.0


def match(
    plate: str,
    known: Iterable[str],
    *,
    max_distance: float = DEFAULT_MAX_DISTANCE,
    margin: float = 0.0,
) -> Match:
    """Match a read plate against known plates (permits, reservations, open sessions).

    * ``exact``: the normalised read is a known plate;
    * ``fuzzy``: exactly one known plate is closest, within `max_distance`;
    * ``ambiguous``: two or more known plates are equally close (within `margin` of the
      closest): never auto-accepted, `plate` stays None;
    * ``none``: nothing within `max_distance`, or an empty read.

    Known plates are normalised too, so ``"AB-123 CD"`` in a permit matches ``"AB123CD"``.
    """
    read = normalize(plate)
    if not read:
        return Match("none", read)
    plates = {normalize(k) for k in known} - {""}
    if read in plates:
        return Match("exact", read, read, 0.0, (read,))
    limit = max_distance + margin
    scored = sorted((d, k) for k in plates if (d := _distance(read, k, limit)) <= limit)
    if not scored or scored[0][0] > max_distance + _TIE:
        return Match("none", read)
    best = scored[0][0]
    closest = tuple(k for d, k in scored if d <= best + margin + _TIE)
    if len(closest) > 1:
        return Match("ambiguous", read, None, best, closest)
    return Match("fuzzy", read, closest[0], best, closest)


def within_one_confusable(read: str, truth: str) -> bool:
    """Whether a read equals the truth or differs from it by one confusable substitution.

    For evaluation: such a read still finds its permit through `match`.
    """
    a, b = normalize(read), normalize(truth)
    if a == b:
        return True
    if len(a) != len(b):
        return False
    diffs = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    return len(diffs) == 1 and diffs[0] in CONFUSABLES
