"""Licence-plate reading: localization, recognition, plate formats and the worker process.

What a lane uses:

* a `PlateSource` (the `PlateWorker`, or the simulator's ground-truth source):
  ``await source.read_frames(frames, deadline_s) -> PlateResult``, one plate from the frames
  of one vehicle's passage, never raising for a bad frame or a crashed reader;
* `match(plate, known, max_distance=...) -> Match`: a read plate against the plates of
  permits, reservations and open sessions; only ``exact`` and ``fuzzy`` are `accepted`.

The model itself (``localize``, ``recognize``, ``pipeline``) is imported only by the worker's
child process, so importing this package stays cheap (no OpenCV, no torch).
"""

from gateway.core.plates import (
    Correction,
    Match,
    PlateFormat,
    best_format_reading,
    formats_for,
    match,
    normalize,
    within_one_confusable,
)
from gateway.core.reads import PlateResult, PlateSource
from gateway.drivers.image import BadImage
from gateway.lpr.capture import CaptureStore
from gateway.lpr.consensus import Consensus, PlateRead, vote
from gateway.lpr.worker import ImageReading, PlateWorker, WorkerStartError, WorkerStats

__all__ = [
    "BadImage",
    "CaptureStore",
    "Consensus",
    "Correction",
    "ImageReading",
    "Match",
    "PlateFormat",
    "PlateRead",
    "PlateResult",
    "PlateSource",
    "PlateWorker",
    "WorkerStartError",
    "WorkerStats",
    "best_format_reading",
    "formats_for",
    "match",
    "normalize",
    "vote",
    "within_one_confusable",
]
