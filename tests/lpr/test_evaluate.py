"""`gateway.lpr.evaluate`: the lane's view of a labelled set (what it takes, what it gets wrong).

A scripted reader answers each photo with reads the test chose: the photo's pixel value says
which. Both kinds of reading are used, a `PlateReader`'s (`pipeline.Candidate`, crop as an
array) and the worker's (`PlateRead`, crop as PNG bytes or none).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from gateway.lpr.consensus import PlateRead
from gateway.lpr.evaluate import char_errors, evaluate
from gateway.lpr.pipeline import Candidate, FrameReading
from gateway.lpr.worker import ImageReading

BOX = (5, 6, 60, 20)
Script = Sequence[tuple[str, float]]  # (read, per-character confidence) per photo, "" for none


def _pipeline_reading(text: str, conf: float) -> FrameReading:
    if not text:
        return FrameReading()
    crop = np.full((20, 60, 3), 200, np.uint8)
    return FrameReading([Candidate(text, conf, [conf] * len(text), BOX, crop)])


def _worker_reading(text: str, conf: float) -> ImageReading:
    if not text:
        return ImageReading((), {})
    return ImageReading((PlateRead(text, conf, (conf,) * len(text), BOX, 0),), {})


KINDS: dict[str, Callable[[str, float], Any]] = {
    "pipeline": _pipeline_reading,
    "worker": _worker_reading,
}


class ScriptedReader:
    """Reads photo number N (its pixel value) as the script's Nth entry."""

    def __init__(self, script: Script, kind: str = "pipeline") -> None:
        self.script = script
        self.make = KINDS[kind]

    def read(self, image: npt.NDArray[np.uint8]) -> Any:
        return self.make(*self.script[int(image[0, 0, 0])])


def labelled(folder: Path, labels: Sequence[str]) -> Path:
    """Photos p0, p1, ... labelled with `labels`; photo N's pixels hold N."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, plate in enumerate(labels):
        assert cv2.imwrite(str(folder / f"p{n}.png"), np.full((32, 32, 3), n, np.uint8))
        x, y, w, h = BOX
        (folder / f"p{n}.txt").write_text(f"p{n}.png\t{x}\t{y}\t{w}\t{h}\t{plate}\n")
    return folder


LABELS = ["ABC1234", "DEF5678", "GHM9012", "JKL3456"]
SCRIPT = [
    ("ABC1234", 0.9),  # right, taken
    ("DEF5G78", 0.9),  # wrong, taken: confident and wrong
    ("GHH9012", 0.4),  # wrong, below the threshold: the lane would ask
    ("", 0.0),  # nothing read
]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_wrong_read_taken_at_the_threshold_is_confident_wrong(tmp_path: Path,
                                                                kind: str) -> None:
    figures = evaluate(labelled(tmp_path, LABELS), ScriptedReader(SCRIPT, kind))
    # The old figures come first, unchanged; the lane's view follows.
    assert list(figures)[:8] == ["images", "exact", "accuracy", "within_one_confusable",
                                 "localized", "p50_ms", "p95_ms", "worker_peak_rss_mb"]
    assert (figures["images"], figures["exact"], figures["accuracy"]) == (4, 1, 0.25)
    assert figures["accepted"] == 0.5
    assert figures["accepted_right"] == 0.25
    assert figures["confident_wrong"] == 0.25
    assert figures["confident_wrong_count"] == 1
    assert figures["threshold"] == 0.6


def test_the_threshold_decides_what_is_taken(tmp_path: Path) -> None:
    folder = labelled(tmp_path, LABELS)
    low = evaluate(folder, ScriptedReader(SCRIPT), threshold=0.3, char_threshold=0.0)
    assert (low["accepted"], low["confident_wrong_count"]) == (0.75, 2)
    # The default character floor (0.8) turns down every read scripted below it.
    floored = evaluate(folder, ScriptedReader(SCRIPT), threshold=0.3)
    assert floored["accepted"] < low["accepted"]
    assert floored["char_threshold"] == 0.8
    high = evaluate(folder, ScriptedReader(SCRIPT), threshold=0.95)
    assert (high["accepted"], high["confident_wrong_count"]) == (0.0, 0)


def test_char_errors_align_the_read_to_the_label() -> None:
    assert char_errors("ABC1234", "ABC1234") == []
    assert char_errors("DEF5678", "DEF5G78") == [("6", "G")]
    assert char_errors("ABC1234", "ABC234") == [("1", "")]
    assert char_errors("ABC1234", "AABC1234") == [("", "A")]
    assert char_errors("WM12", "HN12") == [("W", "H"), ("M", "N")]


def test_per_char_errors_counts_confusions_over_the_set(tmp_path: Path) -> None:
    labels = ["MMA123", "KMB456", "ZZZ999", "QRS111", "TUV222"]
    script = [("HMA123", 0.9), ("KHB456", 0.3), ("ZZZ999", 0.9), ("QRS11", 0.9), ("", 0.0)]
    figures = evaluate(labelled(tmp_path, labels), ScriptedReader(script))
    # Wrong reads count whether taken or not; a photo with no read adds nothing.
    assert figures["per_char_errors"] == [
        {"truth": "M", "read": "H", "count": 2},
        {"truth": "1", "read": "", "count": 1},
    ]


def test_misses_leave_their_crop_and_what_was_read(tmp_path: Path) -> None:
    out = tmp_path / "out" / "misses"
    evaluate(labelled(tmp_path / "set", LABELS), ScriptedReader(SCRIPT), misses=out)
    assert sorted(p.name for p in out.iterdir()) == ["p1.json", "p1.png", "p2.json", "p2.png",
                                                     "p3.json"]
    record = json.loads((out / "p1.json").read_text())
    assert record == {
        "image": str(tmp_path / "set" / "p1.png"),
        "label": "DEF5678",
        "label_box": list(BOX),
        "read": "DEF5G78",
        "accepted": "DEF5G78",
        "vote_confidence": 0.9,
        "confidence": 0.9,
        "char_confidences": [0.9] * 7,
        "box": list(BOX),
        "localized": True,
        "crop": "p1.png",
    }
    crop = cv2.imread(str(out / "p1.png"))
    assert crop is not None
    assert crop.shape == (20, 60, 3)
    below = json.loads((out / "p2.json").read_text())
    assert (below["read"], below["accepted"], below["crop"]) == ("GHH9012", None, "p2.png")
    nothing = json.loads((out / "p3.json").read_text())
    assert (nothing["read"], nothing["confidence"], nothing["crop"]) == ("", None, None)


def test_a_miss_without_a_crop_leaves_its_json_alone(tmp_path: Path) -> None:
    out = tmp_path / "misses"
    evaluate(labelled(tmp_path / "set", LABELS), ScriptedReader(SCRIPT, "worker"), misses=out)
    assert sorted(p.name for p in out.iterdir()) == ["p1.json", "p2.json", "p3.json"]
    assert json.loads((out / "p1.json").read_text())["crop"] is None
