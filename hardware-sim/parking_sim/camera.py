"""Simulated plate cameras: synthetic scenes or replayed photos, behind the real camera interface.

A :class:`SimCamera` is a :class:`~gateway.drivers.FrameSource`, like the gateway's own
OpenCV and snapshot sources, so a lane reads it the same way. While a car's plate is in view
(the lane's physics says when) each frame shows that car; ``Frame.truth`` carries its plate.
Otherwise it shows the empty lane (truth None).

Frames come from a :class:`PlateScene` (a synthetic plate in a country format drawn onto a
car-ish body and background, with random angle, blur, lighting and noise) or a
:class:`PhotoLibrary` (photos with ``file x y w h PLATE`` label files, as in
``openalpr-dev``). Rendering is on demand: a frame is made only when someone asks for one,
at most ``fps`` per second of loop time.

:class:`GroundTruthReader` answers with the truth of the frames: a plate reader that is
always right, for running a lot before the real reader is plugged in.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt
import structlog

from gateway.core.clock import Clock
from gateway.drivers import Frame

if TYPE_CHECKING:
    from gateway.lpr.worker import PlateResult

log = structlog.get_logger(__name__)

Image = npt.NDArray[np.uint8]

# (width, height) in pixels at the plate's native scale, from real plate sizes.
_PLATE_SIZES = {"eu": (520, 112), "de": (520, 112), "uk": (520, 111), "us": (300, 150),
                "br": (400, 130)}
_BODY_COLOURS = [(40, 40, 40), (200, 200, 200), (30, 30, 150), (150, 60, 20), (230, 230, 230),
                 (20, 90, 40), (90, 90, 100), (0, 140, 220)]


def render_plate(printed: str, fmt: str, rng: random.Random) -> Image:
    """A flat, front-on plate for its format: colours, band and lettering."""
    w, h = _PLATE_SIZES.get(fmt, _PLATE_SIZES["eu"])
    yellow = fmt == "uk" and rng.random() < 0.5  # a UK rear plate
    plate = np.full((h, w, 3), (0, 200, 250) if yellow else (245, 245, 245), np.uint8)
    left, top = 8, 8
    if fmt in ("eu", "de"):
        band = 50
        cv2.rectangle(plate, (0, 0), (band, h), (150, 50, 0), -1)
        cv2.circle(plate, (band // 2, h // 3), 12, (0, 200, 255), 2)
        cv2.putText(plate, "F" if fmt == "eu" else "D", (band // 2 - 11, h - 18),
                    cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
        left = band + 8
    elif fmt == "br":
        cv2.rectangle(plate, (0, 0), (w, 30), (140, 60, 0), -1)
        cv2.putText(plate, "BRASIL", (w // 2 - 48, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
                    (255, 255, 255), 2, cv2.LINE_AA)
        top = 34
    elif fmt == "us":
        cv2.putText(plate, "California", (w // 2 - 80, 34), cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
                    1.1, (40, 40, 200), 2, cv2.LINE_AA)
        top = 40
    cv2.rectangle(plate, (2, 2), (w - 3, h - 3), (20, 20, 20), 3)
    _fit_text(plate, printed, (left, top, w - 8, h - 8))
    return plate


def _fit_text(image: Image, text: str, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    font, thickness = cv2.FONT_HERSHEY_DUPLEX, 5
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, thickness)
    scale = min((x1 - x0) / tw, (y1 - y0) * 0.8 / th)
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    origin = (x0 + (x1 - x0 - tw) // 2, y0 + (y1 - y0 + th) // 2)
    cv2.putText(image, text, origin, font, scale, (15, 15, 15), thickness, cv2.LINE_AA)


@dataclass(frozen=True, slots=True)
class SceneOptions:
    size: tuple[int, int] = (640, 360)  # width, height
    max_yaw: float = 0.25  # how far the plate may be seen from the side (fraction of width)
    max_blur: int = 2  # Gaussian blur radius, in pixels
    light: tuple[float, float] = (0.45, 1.25)  # brightness factor: dusk to bright sun
    noise_sd: float = 6.0
    jpeg_quality: tuple[int, int] = (55, 92)


class PlateScene:
    """Synthetic frames: the empty lane, or a car front with its plate."""

    def __init__(self, options: SceneOptions | None = None, *, seed: int = 0) -> None:
        self.options = options or SceneOptions()
        self._rng = random.Random(seed)
        self._background = self._render_background()
        # Sensor noise fields, drawn once and reused at random offsets: drawing Gaussian
        # noise for every frame would cost more than the rest of the rendering.
        w, h = self.options.size
        gen = np.random.default_rng(seed)
        self._noise = [np.rint(gen.normal(0.0, self.options.noise_sd, (h, w, 3)))
                       .astype(np.int16) for _ in range(3)]

    def _render_background(self) -> Image:
        w, h = self.options.size
        rows = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
        wall = np.array([150, 140, 120], np.float32)
        asphalt = np.array([70, 70, 72], np.float32)
        horizon = 0.45
        mix = np.clip((rows - horizon) * 6 + 0.5, 0, 1)
        gradient = wall * (1 - mix[..., None]) + asphalt * mix[..., None]
        image = np.repeat(gradient, w, axis=1).astype(np.uint8)
        # Lane markings, for the eye and for a localiser's false candidates.
        cv2.line(image, (w // 5, h), (w // 2 - 20, int(h * horizon)), (210, 210, 210), 3)
        cv2.line(image, (4 * w // 5, h), (w // 2 + 20, int(h * horizon)), (210, 210, 210), 3)
        return image

    def empty(self) -> Image:
        return self._finish(self._background.copy())

    def render(self, printed: str, fmt: str) -> tuple[Image, tuple[int, int, int, int]]:
        """A frame of a car showing ``printed``; returns it and the plate's box (x, y, w, h)."""
        rng, opt = self._rng, self.options
        w, h = opt.size
        image = self._background.copy()
        # The car front: body, windscreen, lights; its size says how close the car is.
        scale = rng.uniform(0.75, 1.0)
        cx = w // 2 + int(rng.uniform(-0.12, 0.12) * w)
        bw, bh = int(w * 0.62 * scale), int(h * 0.62 * scale)
        x0, y0 = cx - bw // 2, h - bh - int(h * 0.04)
        colour = rng.choice(_BODY_COLOURS)
        cv2.rectangle(image, (x0, y0 + bh // 3), (x0 + bw, y0 + bh), colour, -1)
        screen = np.array([[x0 + bw // 8, y0 + bh // 3], [x0 + bw * 7 // 8, y0 + bh // 3],
                           [x0 + bw * 3 // 4, y0], [x0 + bw // 4, y0]], np.int32)
        cv2.fillPoly(image, [screen], (60, 50, 40))
        for lx in (x0 + bw // 8, x0 + bw * 7 // 8):
            cv2.ellipse(image, (lx, y0 + bh // 2), (bw // 12, bh // 14), 0, 0, 360,
                        (220, 235, 240), -1)
        plate = render_plate(printed, fmt, rng)
        pw = int(bw * 0.5)
        ph = int(pw * plate.shape[0] / plate.shape[1])
        px, py = cx - pw // 2, y0 + int(bh * 0.72) - ph // 2
        box = self._paste(image, plate, (px, py, pw, ph))
        return self._finish(image), box

    def _paste(self, image: Image, plate: Image, box: tuple[int, int, int, int]
               ) -> tuple[int, int, int, int]:
        """Warp the plate onto the frame as seen from an angle; the box it covers."""
        rng = self._rng
        px, py, pw, ph = box
        yaw = rng.uniform(-self.options.max_yaw, self.options.max_yaw)
        roll = rng.uniform(-0.06, 0.06) * ph
        near, far = ph * (1 + abs(yaw) * 0.3), ph * (1 - abs(yaw) * 0.3)
        left_h, right_h = (far, near) if yaw > 0 else (near, far)
        cy = py + ph / 2
        quad = np.array([[px, cy - left_h / 2 - roll], [px + pw, cy - right_h / 2 + roll],
                         [px + pw, cy + right_h / 2 + roll], [px, cy + left_h / 2 - roll]],
                        np.float32)
        src = np.array([[0, 0], [plate.shape[1], 0], [plate.shape[1], plate.shape[0]],
                        [0, plate.shape[0]]], np.float32)
        matrix = cv2.getPerspectiveTransform(src, quad)
        size = (image.shape[1], image.shape[0])
        warped = cv2.warpPerspective(plate, matrix, size)
        mask = cv2.warpPerspective(np.full(plate.shape[:2], 255, np.uint8), matrix, size)
        image[mask > 0] = warped[mask > 0]
        x, y, bw, bh = cv2.boundingRect(quad.astype(np.int32))
        return int(x), int(y), int(bw), int(bh)

    def _finish(self, image: Image) -> Image:
        """Lighting, blur, sensor noise and compression: what a real camera adds."""
        rng, opt = self._rng, self.options
        out = cv2.convertScaleAbs(image, alpha=rng.uniform(*opt.light))
        blur = rng.randint(0, opt.max_blur)
        if blur:
            out = cv2.GaussianBlur(out, (2 * blur + 1, 2 * blur + 1), 0)
        noise = self._noise[rng.randrange(len(self._noise))]
        shift = rng.randrange(noise.shape[0])
        noisy = out.astype(np.int16) + np.roll(noise, shift, axis=0)
        out = np.clip(noisy, 0, 255).astype(np.uint8)
        ok, jpeg = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY,
                                              rng.randint(*opt.jpeg_quality)])
        if ok:
            decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
            if decoded is not None:
                out = decoded
        return np.ascontiguousarray(out, dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class Photo:
    path: Path
    plate: str
    box: tuple[int, int, int, int]


class PhotoLibrary:
    """Labelled photos: ``NAME.jpg`` beside ``NAME.txt`` holding ``NAME.jpg x y w h PLATE``.

    The label's fields are tab-separated; ``x y w h`` is the plate's box in pixels.

    Folders are searched recursively (``openalpr-dev`` keeps ``eu/`` and ``br/``). A label
    that cannot be parsed is logged and skipped.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.photos: list[Photo] = []
        self.skipped = 0
        for label in sorted(folder.rglob("*.txt")):
            photo = self._parse(label)
            if photo is None:
                self.skipped += 1
            else:
                self.photos.append(photo)
        if not self.photos:
            raise ValueError(f"no labelled photos under {folder}")
        self._by_plate: dict[str, list[Photo]] = {}
        for photo in self.photos:
            self._by_plate.setdefault(photo.plate, []).append(photo)
        self._cache: dict[Path, Image] = {}

    @staticmethod
    def _parse(label: Path) -> Photo | None:
        try:
            fields = label.read_text(encoding="utf-8").strip().split("\t")
            name, x, y, w, h, plate = fields[:6]
            image = label.parent / name
            if not image.is_file():
                raise ValueError(f"{name} not found")
            return Photo(image, plate.strip().upper(), (int(x), int(y), int(w), int(h)))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            log.warning("photos.bad_label", label=str(label), error=str(exc))
            return None

    def plates(self) -> list[str]:
        return sorted(self._by_plate)

    def image(self, plate: str, rng: random.Random) -> tuple[Image, Photo] | None:
        choices = self._by_plate.get(plate)
        if not choices:
            return None
        photo = rng.choice(choices)
        image = self._cache.get(photo.path)
        if image is None:
            loaded = cv2.imread(str(photo.path), cv2.IMREAD_COLOR)
            if loaded is None:
                log.warning("photos.unreadable", path=str(photo.path))
                return None
            image = np.ascontiguousarray(loaded, dtype=np.uint8)
            if len(self._cache) < 64:
                self._cache[photo.path] = image
        return image, photo


@dataclass(frozen=True, slots=True)
class Shown:
    """What is in front of a camera: a plate (printed as on the car) and its format."""

    plate: str  # normalised truth
    printed: str
    fmt: str
    # False: a plate no reader can make out (dirt, a bike rack over it); the frames say so in
    # ``meta["unreadable"]`` and the ground-truth reader reads nothing from them.
    readable: bool = True


_BLANK = np.zeros((8, 8, 3), np.uint8)


class SimCamera:
    """A lane camera in the simulated world; implements :class:`~gateway.drivers.FrameSource`."""

    def __init__(
        self,
        camera_id: str,
        *,
        clock: Clock,
        scene: PlateScene | None = None,
        photos: PhotoLibrary | None = None,
        fps: float = 8.0,
        seed: int = 0,
        render: bool = True,
    ) -> None:
        self.camera_id = camera_id
        self._clock = clock
        # False: frames carry only the truth on a blank image, for a ground-truth reader in a
        # long run, where drawing every frame would cost more than the rest of the lot.
        self._draw = render
        self._scene = scene or PlateScene(seed=seed)
        self._photos = photos
        self._period = 1.0 / fps
        self._rng = random.Random(seed)
        self._shown: Shown | None = None
        self._frame: Frame | None = None
        self._frame_at = float("-inf")
        self._sequence = 0
        self._returned = 0
        self._changed = asyncio.Event()
        self.failed = False  # a fault: the camera sends nothing (latest None, next_frame waits)
        self.frames_rendered = 0

    # -- the world's side ------------------------------------------------------------------

    def show(self, shown: Shown | None) -> None:
        """A car comes into view (or leaves it: None)."""
        if shown == self._shown:
            return
        self._shown = shown
        self._frame = None  # the picture changed: the next ask renders anew
        self._changed.set()

    # -- FrameSource -----------------------------------------------------------------------

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._changed.set()

    def latest(self) -> Frame | None:
        if self.failed:
            return None
        now = asyncio.get_running_loop().time()
        if self._frame is None or now - self._frame_at >= self._period - 1e-6:
            self._render(now)
        frame = self._frame
        if frame is not None:
            self._returned = max(self._returned, frame.sequence)
        return frame

    async def next_frame(self, timeout_s: float) -> Frame | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.failed:
            now = loop.time()
            due = self._frame_at + self._period
            if self._frame is None or now >= due - 1e-6:
                self._render(now)
                frame = self._frame
                if frame is not None and frame.sequence > self._returned:
                    self._returned = frame.sequence
                    return frame
            wait = min(due, deadline) - now if self._frame is not None else 0.0
            if now >= deadline:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(wait, 0.0))
        # A failed camera: nothing comes.
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        return None

    def _render(self, now: float) -> None:
        shown = self._shown
        meta: dict[str, Any] = {"source": "sim"}
        if shown is None:
            image = self._scene.empty() if self._draw else _BLANK
            truth = None
        elif not self._draw:
            image, truth = _BLANK, shown.plate
        else:
            image, box, truth = self._render_car(shown, meta)
            meta["plate_box"] = box
        if shown is not None and not shown.readable:
            meta["unreadable"] = True
        self._sequence += 1
        self.frames_rendered += 1
        self._frame = Frame(self.camera_id, image, self._clock.stamp(), self._sequence,
                            truth=truth, meta=meta)
        self._frame_at = now

    def _render_car(self, shown: Shown, meta: dict[str, Any]
                    ) -> tuple[Image, tuple[int, int, int, int], str]:
        if self._photos is not None:
            found = self._photos.image(shown.plate, self._rng)
            if found is not None:
                image, photo = found
                meta["photo"] = str(photo.path)
                return image, photo.box, photo.plate
        image, box = self._scene.render(shown.printed, shown.fmt)
        meta["format"] = shown.fmt
        return image, box, shown.plate


class GroundTruthReader:
    """A plate reader that reads the truth the simulator put into the frames.

    Implements the lane's plate source (``read_frames``, as :class:`gateway.lpr.worker.PlateWorker`
    does) and a per-image ``read``. A frame of an unreadable plate (:attr:`Shown.readable`)
    reads as nothing, as a real reader's would.
    """

    def __init__(self) -> None:
        self.requests = 0

    @staticmethod
    def read(frame: Frame) -> str | None:
        return None if frame.meta.get("unreadable") else frame.truth

    async def read_frames(
        self, frames: Sequence[Frame], deadline_s: float | None = None
    ) -> PlateResult:
        from gateway.lpr.worker import PlateResult

        del deadline_s
        self.requests += 1
        truths = [truth for f in frames if (truth := self.read(f))]
        if not frames:
            return PlateResult(plate=None, confidence=0.0, reason="no_frames")
        if not truths:
            return PlateResult(plate=None, confidence=0.0, reason="no_read",
                               frames_used=len(frames), frames_total=len(frames))
        plate = max(set(truths), key=truths.count)
        return PlateResult(plate=plate, confidence=1.0, frames_used=len(frames),
                           frames_agreeing=truths.count(plate), frames_total=len(frames))
