"""The recognizer's training tools: synthetic plate crops, and a short fine-tuning run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from gateway.core import plates

pytestmark = pytest.mark.slow  # a short torch training run

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

plate_synth = pytest.importorskip("plate_synth")


@pytest.fixture(scope="module")
def fonts() -> None:
    try:
        plate_synth.available_fonts()
    except RuntimeError as exc:  # pragma: no cover - every Debian image has DejaVu
        pytest.skip(str(exc))


@pytest.mark.usefixtures("fonts")
def test_crops_are_grey_rows_of_plate_text() -> None:
    source = plate_synth.PlateCrops(seed=3)
    samples = source.batch(60)
    masks = plate_synth.shipped_masks()
    shaped = 0
    for sample in samples:
        assert sample.crop.dtype == np.uint8
        assert sample.crop.ndim == 2
        h, w = sample.crop.shape
        assert 8 <= h <= 200
        assert w > h  # a row of glyphs, wider than tall
        assert sample.text == plates.normalize(sample.text)
        shaped += any(plates.PlateFormat("m", "x", mask=m).matches(sample.text) for m in masks)
    # Most follow a shipped format; a share are free strings, so no format becomes a rule.
    assert 25 <= shaped < 55


@pytest.mark.usefixtures("fonts")
def test_the_same_seed_gives_the_same_crops() -> None:
    a = plate_synth.PlateCrops(seed=5).batch(5)
    b = plate_synth.PlateCrops(seed=5).batch(5)
    assert [s.text for s in a] == [s.text for s in b]
    assert all(np.array_equal(x.crop, y.crop) for x, y in zip(a, b, strict=True))


def test_every_shipped_mask_is_trained_on() -> None:
    masks = set(plate_synth.shipped_masks())
    for group in plates.FORMAT_GROUPS.values():
        for fmt in group:
            if not fmt.generic:
                # Listed characters (de-eh's E or H) are trained as their class.
                assert {plates.mask_classes(m) for m in fmt.masks} <= masks


@pytest.mark.usefixtures("fonts")
def test_a_short_training_run_writes_weights_the_reader_loads(tmp_path: Path) -> None:
    pytest.importorskip("easyocr")
    pytest.importorskip("easyocr_en_models")
    train = pytest.importorskip("train_recognizer")
    from gateway.lpr.recognize import EasyOcrOptions, EasyOcrRecognizer

    out = tmp_path / "tiny.pt"
    args = ["--out", str(out), "--steps", "2", "--batch", "4", "--report", "1",
            "--held-out", "8", "--threads", "1"]
    assert train.main(args) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["steps"] == 2
    assert record["bytes"] == out.stat().st_size
    assert 0.0 <= record["held_out_exact"] <= 1.0
    engine = EasyOcrRecognizer(EasyOcrOptions(weights=str(out)))
    engine.warm_up()
    [read] = engine.recognize([plate_synth.PlateCrops(seed=1).sample().crop])
    assert set(read.text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
