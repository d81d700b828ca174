"""`parking-gateway bench lane`: passages through the real daemon's lane, from labelled photos."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner, Result
from parking_sim.lane_bench import outcome, passage_frames

from gateway import cli
from gateway.core.access import EntryDecision
from tests.lpr.test_localize import render_scene

pytestmark = pytest.mark.slow  # the lane bench with the ONNX reader (about 10 s)

KEYS = {"reader", "frames", "passages", "decided_without_intercom", "opened_right",
        "wrong_decisions", "opened_as_visitor", "intercom", "refused", "skipped",
        "p50_open_ms", "p95_open_ms", "p99_open_ms", "bay_to_journal_p50_ms",
        "bay_to_journal_p99_ms", "wrong"}


def bench(*args: object) -> Result:
    return CliRunner().invoke(cli.cli, ["bench", "lane", *(str(a) for a in args)])


def labelled_folder(folder: Path, plates: dict[str, str]) -> Path:
    """Photos in the openalpr layout: NAME.png and NAME.txt (`file x y w h PLATE`)."""
    folder.mkdir()
    for name, plate in plates.items():
        image, (x, y, w, h) = render_scene(plate)
        cv2.imwrite(str(folder / f"{name}.png"), image)
        (folder / f"{name}.txt").write_text(f"{name}.png\t{x}\t{y}\t{w}\t{h}\t{plate}\n")
    return folder


def test_photos_of_readable_plates_open_the_lane_without_the_intercom(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    photos = labelled_folder(tmp_path / "photos", {"car1": "7ABC123", "car2": "4YTD483",
                                                   "car3": "6XYZ789"})
    result = bench("--photos", photos, "--limit", 2, "--formats", "us", "--reader", "lpr",
                   "--json")
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.stdout)
    assert set(figures) == KEYS
    assert figures["reader"].startswith("onnx:")
    assert figures["frames"] == "photo+jitter"
    assert figures["passages"] == 2  # --limit: the first two photos by name
    assert figures["opened_right"] == 2
    assert figures["decided_without_intercom"] == 1.0
    assert figures["wrong_decisions"] == 0
    assert figures["wrong"] == []
    assert 50 <= figures["p50_open_ms"] <= figures["p99_open_ms"]
    assert "2/2 passages" in result.stderr


def test_an_undecodable_photo_is_skipped_and_the_table_says_so(tmp_path: Path) -> None:
    photos = labelled_folder(tmp_path / "photos", {"car1": "7ABC123"})
    (photos / "car2.jpg").write_bytes(b"not a jpeg")
    (photos / "car2.txt").write_text("car2.jpg\t1\t2\t3\t4\t4YTD483\n")
    result = bench("--photos", photos, "--reader", "ground-truth")
    assert result.exit_code == 0, result.stderr
    rows = dict(line.strip().rsplit(None, 1) for line in result.stdout.splitlines()[1:])
    assert rows["passages"] == "1"
    assert rows["opened right"] == "1"
    assert rows["skipped"] == "1"
    assert rows["frames"] == "photo+jitter"


def test_a_folder_without_labelled_photos_is_invalid_input(tmp_path: Path) -> None:
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    cv2.imwrite(str(folder / "car.png"), render_scene("7ABC123")[0])
    result = bench("--photos", folder, "--json")
    assert result.exit_code == 2
    assert "holds no labelled photos" in result.stderr
    assert result.stdout == ""


def test_limit_needs_photos() -> None:
    result = bench("--limit", 3)
    assert result.exit_code == 2
    assert "--limit needs --photos" in result.stderr


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        (EntryDecision(True, "permit", "7ABC123", "permit", "bench-0"), "right"),
        (EntryDecision(True, "permit", "7ABC128", "permit", "bench-1"), "wrong"),
        (EntryDecision(True, "permit", "7ABC128", "account", "bench-1"), "wrong"),
        (EntryDecision(True, "visitor", "7A8C1Z3"), "visitor"),
        (EntryDecision(False, "unreadable", None), "intercom"),
        (EntryDecision(False, "ambiguous", "7ABC12"), "intercom"),
        (EntryDecision(False, "lot_closed", "7ABC123"), "refused"),
    ],
)
def test_a_decision_is_scored_against_the_cars_own_permit_plate(
    decision: EntryDecision, expected: str
) -> None:
    assert outcome(decision, "7ABC123") == expected


def test_a_passage_is_the_photo_then_jittered_copies_of_it() -> None:
    image, _ = render_scene("7ABC123")
    frames = passage_frames(image, 3, seed=0)
    assert len(frames) == 3
    assert frames[0] is image
    for frame in frames[1:]:
        assert frame.shape == image.shape
        assert frame.dtype == np.uint8
        difference = np.abs(frame.astype(int) - image.astype(int))
        assert 0 < difference.mean() < 20
    assert not np.array_equal(frames[1], frames[2])
    assert np.array_equal(passage_frames(image, 3, seed=0)[1], frames[1])  # a fixed seed
