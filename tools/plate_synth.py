"""Synthetic plate crops for fine-tuning the recognizer: what localization hands it, rendered.

The reader never shows the recognizer a whole photo: `gateway.lpr.localize` cuts the row
of glyphs out, rectifies it, paints out what is not a glyph and stretches the contrast. So
the training images are rendered as such crops: a row of plate characters in one of several
DIN-like and grotesque fonts (plates use DIN 1451, FE-Schrift and their cousins), grouped
as plates group them, then spoilt the ways real crops are: stroke weight, condensing,
spacing, tilt and shear, a strip or seal left at the edges, blur, low resolution, JPEG,
noise, uneven light, and finally `localize.normalise_contrast`, as the reader does.

The texts follow the shipped plate formats (`gateway.core.plates.FORMAT_GROUPS`) plus the
Slovak and Czech series, with a share of free strings so that no format is learnt as a
rule. Fonts come from Debian packages (see `FONT_PACKAGES`); only fonts whose licence
allows use are listed, and none is shipped: only the weights trained on the renderings.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from gateway.core import plates
from gateway.lpr.localize import normalise_contrast

Image = npt.NDArray[np.uint8]

FONT_PACKAGES = (
    "fonts-opendin",  # OFL-1.1: DIN 1451 revival, the plate font of DE/SK/CZ and others
    "fonts-roboto-unhinted",  # Apache-2.0: Roboto Condensed
    "fonts-liberation",  # OFL-1.1: Liberation Sans Narrow
    "fonts-urw-base35",  # AGPL with font exception: Nimbus Sans (Narrow)
    "fonts-dejavu-core",  # Bitstream Vera licence
    "fonts-b612",  # OFL-1.1
    "fonts-routed-gothic",  # MIT
    "fonts-freefont-ttf",  # GPL-3+ with font exception
)

# (path, weight): the DIN-like faces come up most often.
FONTS: tuple[tuple[str, float], ...] = (
    ("/usr/share/fonts/truetype/opendin/OSP-DIN.ttf", 6.0),
    ("/usr/share/fonts/truetype/roboto/unhinted/RobotoCondensed-Regular.ttf", 2.0),
    ("/usr/share/fonts/truetype/roboto/unhinted/RobotoCondensed-Medium.ttf", 2.0),
    ("/usr/share/fonts/truetype/roboto/unhinted/RobotoCondensed-Bold.ttf", 2.0),
    ("/usr/share/fonts/truetype/liberation/LiberationSansNarrow-Regular.ttf", 1.5),
    ("/usr/share/fonts/truetype/liberation/LiberationSansNarrow-Bold.ttf", 1.5),
    ("/usr/share/fonts/opentype/urw-base35/NimbusSansNarrow-Regular.otf", 1.0),
    ("/usr/share/fonts/opentype/urw-base35/NimbusSansNarrow-Bold.otf", 1.0),
    ("/usr/share/fonts/opentype/urw-base35/NimbusSans-Regular.otf", 0.7),
    ("/usr/share/fonts/opentype/urw-base35/NimbusSans-Bold.otf", 0.7),
    ("/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf", 1.0),
    ("/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf", 1.0),
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 0.5),
    ("/usr/share/fonts/opentype/b612/B612-Regular.otf", 0.5),
    ("/usr/share/fonts/opentype/b612/B612-Bold.otf", 0.5),
    ("/usr/share/fonts/truetype/routed-gothic/routed-gothic-narrow.ttf", 0.7),
    ("/usr/share/fonts/truetype/routed-gothic/routed-gothic.ttf", 0.5),
    ("/usr/share/fonts/truetype/freefont/FreeSans.ttf", 0.5),
    ("/usr/share/fonts/truetype/freefont/FreeSansBold.ttf", 0.7),
)

# Series the shipped groups do not name but that are common on the road (SK: BA 123 AB,
# CZ: 1AB 2345 and 1A2 3456), plus the shipped masks of every group.
EXTRA_MASKS = ("LLNNNLL", "NLLNNNN", "NLNNNNN")
ALNUM = string.ascii_uppercase + string.digits
# Many series leave out I, O and Q, because they pass for 1 and 0; they come up a third as often.
LETTER_WEIGHTS = [1 / 3 if ch in "IOQ" else 1.0 for ch in string.ascii_uppercase]
# Fonts whose I is a plain bar; with these a sample may draw its 1 as that bar, as the
# Brazilian and several other plate fonts do (a flag too small to survive the camera).
BAR_ONE_SHARE = 0.35
# Free strings, and masks shuffled, keep the network from learning that a plate starts with
# a letter (most formats do; the Czech, Spanish and Dutch ones do not).
FREE_SHARE = 0.35
# Rows with a dash, seal, sticker or emblem in their gaps.
DECORATED_SHARE = 0.35
SERIF_I = ("B612",)


@dataclass(frozen=True)
class Sample:
    text: str
    crop: Image
    font: str


def available_fonts() -> list[tuple[str, float]]:
    """The listed fonts that are installed; raises when none is."""
    found = [(path, weight) for path, weight in FONTS if Path(path).is_file()]
    if not found:
        packages = " ".join(FONT_PACKAGES)
        raise RuntimeError(f"no training font installed: apt-get install {packages}")
    return found


def shipped_masks() -> list[str]:
    """Every fixed mask of the shipped formats, and the extra series.

    A position a format limits to listed characters (de-eh's E or H, a Polish voivodeship
    letter) is filled like any of its class: the network learns glyphs, not where a country
    puts which letter.
    """
    masks: list[str] = list(EXTRA_MASKS)
    for group in plates.FORMAT_GROUPS.values():
        for fmt in group:
            if not fmt.generic:
                masks.extend(plates.mask_classes(m) for m in fmt.masks)
    return sorted(set(masks))


def random_text(rng: random.Random, masks: Sequence[str]) -> str:
    """A plate text: a shipped mask filled at random, or now and then a free string."""
    if rng.random() < FREE_SHARE:
        return "".join(rng.choice(ALNUM) for _ in range(rng.randint(4, 9)))
    mask = rng.choice(masks)
    if rng.random() < 0.25:  # the same classes in another order: no position is always one
        mask = "".join(rng.sample(mask, len(mask)))
    out = []
    for cls in mask:
        if cls == "L":
            out.append(rng.choices(string.ascii_uppercase, LETTER_WEIGHTS)[0])
        elif cls == "N":
            out.append(rng.choice(string.digits))
        else:
            out.append(rng.choice(ALNUM))
    return "".join(out)


def _groups(text: str, rng: random.Random) -> list[int]:
    """Where the gaps go (at most two): at letter/digit changes mostly, as plates group."""
    changes = [i for i in range(1, len(text)) if text[i].isdigit() != text[i - 1].isdigit()]
    if not changes or rng.random() < 0.25:
        changes = list(range(2, len(text) - 1))
    rng.shuffle(changes)
    return sorted(changes[: rng.choice((0, 1, 1, 2, 2))])


@lru_cache(maxsize=256)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def render(text: str, font_path: str, rng: random.Random) -> Image:
    """Dark glyphs on a light ground, 64 px of glyph height, tight to the row."""
    size = 80
    font = _font(font_path, size)
    gaps = set(_groups(text, rng))
    bar_one = rng.random() < BAR_ONE_SHARE and not any(n in font_path for n in SERIF_I)
    spacing = rng.uniform(0.02, 0.22) * size
    decorated = rng.random() < DECORATED_SHARE
    gap_width = rng.uniform(0.45 if decorated else 0.15, 0.8) * size
    glyphs = text.replace("1", "I") if bar_one else text
    boxes = [font.getbbox(ch) for ch in glyphs]
    widths = [b[2] - b[0] for b in boxes]
    total = int(sum(widths) + spacing * len(text) + gap_width * len(gaps) + size)
    canvas = PILImage.new("L", (total, 2 * size), 255)
    draw = ImageDraw.Draw(canvas)
    cap_top, cap_bottom = (size / 2 + v for v in font.getbbox("H")[1::2])
    x = size / 2
    for i, (ch, box) in enumerate(zip(glyphs, boxes, strict=True)):
        if i in gaps:
            if decorated:
                _decoration(draw, x, x + gap_width, cap_top, cap_bottom, rng)
            x += gap_width
        draw.text((x - box[0], size / 2), ch, font=font, fill=0)
        x += widths[i] + spacing
    image = np.asarray(canvas, dtype=np.uint8)
    ys, xs = np.nonzero(image < 128)
    if len(ys) == 0:
        return image
    return np.ascontiguousarray(image[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])


def _decoration(draw: ImageDraw.ImageDraw, x0: float, x1: float, top: float, bottom: float,
                rng: random.Random) -> None:
    """What plates carry between their groups: a dash, a seal or sticker, two stacked stickers,
    a shield, or the patch crop cleaning paints over one. None of it is a character."""
    cx, cy, cap = (x0 + x1) / 2, (top + bottom) / 2, bottom - top
    kind = rng.choice(("dash", "dash", "seal", "ring", "stacked", "shield", "patch"))
    shade = int(rng.uniform(0, 170))
    if kind == "dash":
        half_w, half_h = cap * rng.uniform(0.12, 0.25), cap * rng.uniform(0.04, 0.08)
        draw.rectangle((cx - half_w, cy - half_h, cx + half_w, cy + half_h), fill=shade)
    elif kind in ("seal", "ring"):
        r = cap * rng.uniform(0.15, 0.35)
        y = cy + cap * rng.uniform(-0.2, 0.2)
        draw.ellipse((cx - r, y - r, cx + r, y + r), fill=shade if kind == "seal" else None,
                     outline=shade, width=max(1, int(r * 0.25)))
    elif kind == "stacked":  # German inspection and registration stickers
        r = cap * rng.uniform(0.15, 0.22)
        for y in (cy - 1.1 * r, cy + 1.1 * r):
            draw.ellipse((cx - r, y - r, cx + r, y + r), fill=int(rng.uniform(60, 200)),
                         outline=shade)
    elif kind == "shield":  # a coat of arms
        w, h = cap * rng.uniform(0.2, 0.3), cap * rng.uniform(0.3, 0.45)
        draw.polygon([(cx - w, cy - h), (cx + w, cy - h), (cx + w, cy + 0.2 * h),
                      (cx, cy + h), (cx - w, cy + 0.2 * h)], fill=shade)
    else:
        w, h = cap * rng.uniform(0.15, 0.3), cap * rng.uniform(0.2, 0.5)
        draw.rectangle((cx - w, cy - h, cx + w, cy + h), fill=int(rng.uniform(170, 235)))


def _stroke(image: Image, rng: random.Random) -> Image:
    k = rng.choice((-2, -1, 0, 0, 0, 1, 2, 3))
    if k == 0:
        return image
    kernel = np.ones((abs(k) + 1, abs(k) + 1), np.uint8)
    # Glyphs are dark: eroding the light ground thickens them.
    changed = cv2.erode(image, kernel) if k > 0 else cv2.dilate(image, kernel)
    return np.asarray(changed, np.uint8)


def _place(glyphs: Image, rng: random.Random) -> Image:
    """Condense, pad as localization does (about 0.2 glyph heights), tilt and shear."""
    h, w = glyphs.shape
    squeeze = rng.uniform(0.75, 1.25)
    size = (max(8, int(w * squeeze)), h)
    glyphs = np.asarray(cv2.resize(glyphs, size, interpolation=cv2.INTER_AREA), np.uint8)
    h, w = glyphs.shape
    top, bottom = (int(h * rng.uniform(0.08, 0.35)) for _ in range(2))
    left, right = (int(h * rng.uniform(0.05, 0.5)) for _ in range(2))
    ground = int(rng.uniform(200, 255))
    canvas = np.full((h + top + bottom, w + left + right), ground, np.uint8)
    canvas[top : top + h, left : left + w] = np.minimum(glyphs, ground)
    ch, cw = canvas.shape
    angle = rng.gauss(0, 1.2)
    shear = rng.gauss(0, 0.06)
    m = cv2.getRotationMatrix2D((cw / 2, ch / 2), angle, 1.0)
    m[0, 1] += shear
    m[0, 2] -= shear * ch / 2
    return np.asarray(cv2.warpAffine(canvas, m, (cw, ch), borderMode=cv2.BORDER_REPLICATE),
                      np.uint8)


def _clutter(crop: Image, rng: random.Random) -> Image:
    """What cleaning leaves at times: a strip or frame edge, a border line, a blot."""
    out = crop.copy()
    h, w = out.shape
    ink = int(rng.uniform(0, 90))
    columns = np.flatnonzero((crop < 128).any(axis=0))
    first, last = (int(columns[0]), int(columns[-1])) if len(columns) else (0, w - 1)
    # The country strip or frame edge where the row starts or ends, never over a glyph.
    if rng.random() < 0.12 and first > 2:
        out[:, : min(first - 2, max(1, int(h * rng.uniform(0.05, 0.25))))] = ink
    if rng.random() < 0.08 and w - last > 3:
        out[:, w - min(w - last - 3, max(1, int(h * rng.uniform(0.03, 0.12)))) :] = ink
    if rng.random() < 0.15:  # the plate's border above or below the row
        thick = max(1, int(h * rng.uniform(0.02, 0.07)))
        y = rng.choice((0, h - thick))
        out[y : y + thick, :] = ink
    if rng.random() < 0.05:  # a blot anywhere: dirt, a screw head
        cx, cy = int(w * rng.uniform(0.1, 0.9)), int(h * rng.uniform(0.3, 0.7))
        radius = max(2, int(h * rng.uniform(0.05, 0.12)))
        cv2.circle(out, (cx, cy), radius, int(rng.uniform(60, 180)), -1)
    return out


def _degrade(crop: Image, rng: random.Random) -> Image:
    """Low resolution, blur, light, noise and JPEG, then the reader's contrast stretch."""
    h, w = crop.shape
    target_h = rng.choices((14, 18, 22, 26, 32, 40, 48, 64), (1, 2, 3, 3, 3, 3, 2, 2))[0]
    size = (max(8, int(w * target_h / h)), target_h)
    small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    img = small.astype(np.float32)
    sigma = rng.choice((0.0, 0.0, 0.5, 0.8, 1.2))
    if sigma:
        img = np.asarray(cv2.GaussianBlur(img, (0, 0), sigma), np.float32)
    if rng.random() < 0.5:  # uneven light across the plate
        ramp = np.linspace(rng.uniform(-40, 0), rng.uniform(0, 40), img.shape[1], dtype=np.float32)
        img = img + ramp[None, :]
    low, high = rng.uniform(0, 90), rng.uniform(170, 255)
    img = low + img * (high - low) / 255.0
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(0, 10), img.shape)
    out = np.clip(img + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        quality = rng.randint(25, 90)
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            out = np.asarray(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE), np.uint8)
    if rng.random() < 0.05:
        out = 255 - out  # a light-on-dark row the reader did not invert
    return normalise_contrast(out)


class PlateCrops:
    """An endless, seeded source of (text, crop) pairs."""

    def __init__(self, seed: int, masks: Sequence[str] | None = None) -> None:
        self._rng = random.Random(seed)
        self._fonts = available_fonts()
        self._masks = list(masks or shipped_masks())

    def sample(self) -> Sample:
        rng = self._rng
        text = random_text(rng, self._masks)
        font = rng.choices([f for f, _ in self._fonts], [w for _, w in self._fonts])[0]
        glyphs = _stroke(render(text, font, rng), rng)
        crop = _degrade(_clutter(_place(glyphs, rng), rng), rng)
        return Sample(text=text, crop=crop, font=Path(font).stem)

    def batch(self, n: int) -> list[Sample]:
        return [self.sample() for _ in range(n)]
