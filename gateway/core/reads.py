"""What a plate reader gives a lane: one plate for one passage, or None and the reason.

The types live here, below the reader (`gateway.lpr`) and the lane (`gateway.controllers`), so
the lane machine and its shell know them without importing the reader's process machinery.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Box = tuple[int, int, int, int]  # x, y, w, h in the frame's pixels

FrameStatus = Literal["read", "dropped", "timeout", "bad_image", "error", "crashed", "closed"]

Reason = Literal["no_frames", "no_read", "low_confidence", "dropped", "timeout", "bad_image",
                 "reader_error", "worker_crashed", "worker_unavailable"]


class Agreement(Protocol):
    """What the frames of one passage agree on (`gateway.lpr.consensus.Consensus` is one)."""

    @property
    def plate(self) -> str | None: ...
    @property
    def confidence(self) -> float: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def guess(self) -> str | None: ...
    @property
    def char_confidences(self) -> tuple[float, ...]: ...
    @property
    def box(self) -> Box | None: ...
    @property
    def crop_png(self) -> bytes | None: ...
    @property
    def format(self) -> str | None: ...
    @property
    def frames_agreeing(self) -> int: ...


@dataclass(frozen=True, slots=True)
class PlateResult:
    """What a lane gets for one passage: a plate, or None and the reason.

    `guess` is the best plate there was when `plate` is None for low confidence. `crop_png`
    is the plate's crop as PNG bytes (from the frame whose read agrees best), `box` the
    candidate box ``(x, y, w, h)`` in that frame. `timings_ms` holds the reader's stages,
    ``queue`` (waiting for the child) and ``roundtrip`` (to the child and back), each summed
    over the frames, and ``total``, the request's wall time.
    """

    plate: str | None
    confidence: float
    reason: Reason | None = None
    guess: str | None = None
    char_confidences: tuple[float, ...] = ()
    box: Box | None = None
    crop_png: bytes | None = None
    format: str | None = None
    frames_used: int = 0  # frames the reader read
    frames_agreeing: int = 0  # of those, frames with a read equal to the plate
    frames_total: int = 0
    timings_ms: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_consensus(cls, consensus: Agreement, **extra: Any) -> PlateResult:
        reason: Reason | None = None
        if consensus.reason == "no_read":
            reason = "no_read"
        elif consensus.reason == "low_confidence":
            reason = "low_confidence"
        return cls(plate=consensus.plate, confidence=consensus.confidence, reason=reason,
                   guess=consensus.guess, char_confidences=consensus.char_confidences,
                   box=consensus.box, crop_png=consensus.crop_png, format=consensus.format,
                   frames_agreeing=consensus.frames_agreeing, **extra)


@runtime_checkable
class PlateSource(Protocol):
    """Where a lane gets plates from: the reader's worker, or the simulator's ground truth.

    The frames are the cameras' (`gateway.drivers.Frame`): the core passes them through
    without looking inside, so it names no camera type.
    """

    async def read_frames(
        self, frames: Sequence[Any], deadline_s: float | None = None
    ) -> PlateResult:
        """One plate from the frames of one passage, within `deadline_s` seconds.

        Never raises for bad frames, a slow or crashed reader: the result's `reason` says.
        """
        ...
