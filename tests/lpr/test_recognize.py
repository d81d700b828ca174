"""EasyOCR's recognizer on rendered plate crops (the real model; loaded once for the module)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("easyocr")
pytest.importorskip("easyocr_en_models")

import hashlib
import json
from pathlib import Path

from gateway.lpr.recognize import (
    ALLOWLIST,
    DEFAULT_ENSEMBLE_ABOVE,
    DEFAULT_ENSEMBLE_BELOW,
    MODELS,
    PLATE_WEIGHTS,
    EasyOcrOptions,
    EasyOcrRecognizer,
    OnnxOptions,
    OnnxRecognizer,
    Recognizer,
    RecognizerError,
    TextRead,
    batch_crops,
    ensemble_read,
    line_confidence,
    load_base_network,
    weights_path,
)

pytestmark = pytest.mark.slow  # runs the recognition networks (and torch for the export check)


def text_crop(
    text: str, *, height: int = 64, font: int = cv2.FONT_HERSHEY_SIMPLEX
) -> npt.NDArray[np.uint8]:
    """A tight, upright crop of dark text on white, as localization hands it over."""
    scale, thickness = height / 50.0, max(2, height // 16)
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    crop = np.full((height, tw + height // 3), 255, dtype=np.uint8)
    cv2.putText(
        crop, text, (height // 6, (height + th) // 2), font, scale, 0, thickness, cv2.LINE_AA
    )
    return crop


@pytest.fixture(scope="module", params=["plate", "english_g2", "plate+english_g2"])
def recognizer(request: pytest.FixtureRequest) -> EasyOcrRecognizer:
    """The shipped plate weights, EasyOCR's own and both as an ensemble: the reader may use
    any."""
    engine = EasyOcrRecognizer(EasyOcrOptions(weights=request.param))
    engine.warm_up()
    return engine


def test_it_satisfies_the_recognizer_protocol(recognizer: EasyOcrRecognizer) -> None:
    engine: Recognizer = recognizer
    assert engine.recognize([]) == []


@pytest.mark.parametrize("text", ["ABC1234", "RK735AS", "MH12AB1234", "ABC1D23"])
def test_reads_rendered_plates(recognizer: EasyOcrRecognizer, text: str) -> None:
    [read] = recognizer.recognize([text_crop(text)])
    assert read.text == text
    assert read.confidence > 0.5


def test_a_batch_of_different_widths_reads_each_crop(recognizer: EasyOcrRecognizer) -> None:
    crops = [text_crop("ABC1234"), text_crop("AB12", height=40), text_crop("RK735AS", height=90)]
    reads = recognizer.recognize(crops)
    assert [r.text for r in reads] == ["ABC1234", "AB12", "RK735AS"]


def test_a_crop_reads_the_same_whatever_else_is_in_the_call(
    recognizer: EasyOcrRecognizer,
) -> None:
    # A frame's other candidates (a wide sign, say) must not change how its plate reads.
    crop = text_crop("RK735AS")
    [alone] = recognizer.recognize([crop])
    _, beside = recognizer.recognize([text_crop("EXIT 2 LEVEL 3 WAY OUT"), crop])
    assert beside == alone


def test_every_character_carries_its_evidence(recognizer: EasyOcrRecognizer) -> None:
    [read] = recognizer.recognize([text_crop("ABC1D23", font=cv2.FONT_HERSHEY_DUPLEX)])
    assert len(read.char_confidences) == len(read.text) == len(read.alternatives)
    assert all(0.0 <= c <= 1.0 for c in read.char_confidences)
    for ch, conf, alts in zip(read.text, read.char_confidences, read.alternatives, strict=True):
        assert alts[0] == (ch, pytest.approx(conf))
        assert [p for _, p in alts] == sorted((p for _, p in alts), reverse=True)
    assert read.confidence == pytest.approx(line_confidence(read.char_confidences))


def test_only_plate_characters_come_out(recognizer: EasyOcrRecognizer) -> None:
    [read] = recognizer.recognize([text_crop("ab-12.cd")])
    assert read.text
    assert set(read.text) <= set(ALLOWLIST)


def test_a_blank_crop_reads_as_nothing_confident(recognizer: EasyOcrRecognizer) -> None:
    [read] = recognizer.recognize([np.full((64, 256), 255, dtype=np.uint8)])
    assert read.confidence < 0.5 or read.text == ""


def test_a_missing_model_folder_is_a_clear_error(tmp_path: object) -> None:
    engine = EasyOcrRecognizer(EasyOcrOptions(model_dir=str(tmp_path)))
    with pytest.raises(RecognizerError, match="cannot load EasyOCR models"):
        engine.warm_up()


def test_the_shipped_plate_weights_are_what_their_record_says() -> None:
    record = json.loads(PLATE_WEIGHTS.with_suffix(".json").read_text())
    data = PLATE_WEIGHTS.read_bytes()
    assert record["bytes"] == len(data)
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["base"].startswith("easyocr english_g2")
    assert weights_path("plate") == PLATE_WEIGHTS
    assert weights_path("english_g2") is None


def test_quantized_plate_weights_still_read() -> None:
    engine = EasyOcrRecognizer(EasyOcrOptions(quantize=True))
    engine.warm_up()
    [read] = engine.recognize([text_crop("RK735AS")])
    assert read.text == "RK735AS"


def test_an_ensemble_keeps_the_most_confident_read_of_each_crop() -> None:
    crops = [text_crop("RK735AS"), text_crop("MH12AB1234", font=cv2.FONT_HERSHEY_DUPLEX),
             text_crop("QWERTY7", font=cv2.FONT_HERSHEY_COMPLEX),
             text_crop("MW7713", font=cv2.FONT_HERSHEY_PLAIN)]
    singles = [EasyOcrRecognizer(EasyOcrOptions(weights=w)).recognize(crops)
               for w in ("plate", "english_g2")]
    every = EasyOcrOptions(weights="plate+english_g2", ensemble_above=0.0, ensemble_below=1.0)
    both = EasyOcrRecognizer(every).recognize(crops)
    # Which network wins a crop depends on the library versions; that the surer read is
    # kept does not.
    for i, read in enumerate(both):
        best = max(range(2), key=lambda k: singles[k][i].confidence)
        assert (read.text, read.confidence) == (
            singles[best][i].text, pytest.approx(singles[best][i].confidence))


def test_only_crops_read_with_middling_confidence_go_to_the_next_network() -> None:
    """Sure reads need no second opinion; hopeless ones are mostly not plates."""
    first = [TextRead("AB123CD", 0.97), TextRead("AB123CO", 0.6), TextRead("XX", 0.1)]
    second = {"AB123CO": TextRead("AB123CD", 0.9), "XX": TextRead("AB123", 0.8)}
    shown: list[int] = []

    def network_one(crops: Sequence[TextRead]) -> list[TextRead]:
        return list(crops)

    def network_two(crops: Sequence[TextRead]) -> list[TextRead]:
        shown.append(len(crops))
        return [second[c.text] for c in crops]

    reads = ensemble_read([network_one, network_two], first,  # type: ignore[list-item, arg-type]
                          DEFAULT_ENSEMBLE_ABOVE, DEFAULT_ENSEMBLE_BELOW)
    assert [r.text for r in reads] == ["AB123CD", "AB123CD", "XX"]
    assert shown == [1]


def test_the_onnx_plate_network_is_the_torch_one_exported() -> None:
    """The shipped ONNX file is the shipped state dict, and reads every crop the same way."""
    card = json.loads((MODELS / "plate_g2.onnx.json").read_text())
    assert card["source_sha256"] == hashlib.sha256(PLATE_WEIGHTS.read_bytes()).hexdigest()
    assert card["onnx_sha256"] == hashlib.sha256((MODELS / "plate_g2.onnx").read_bytes()
                                                 ).hexdigest()
    crops = [text_crop("RK735AS"), text_crop("MH12AB1234", font=cv2.FONT_HERSHEY_DUPLEX),
             text_crop("ABC1D23", height=40), np.full((64, 64), 255, dtype=np.uint8)]
    torch_reads = EasyOcrRecognizer(EasyOcrOptions(weights="plate")).recognize(crops)
    onnx_reads = OnnxRecognizer(OnnxOptions(networks="plate")).recognize(crops)
    for a, b in zip(torch_reads, onnx_reads, strict=True):
        assert a.text == b.text
        assert b.char_confidences == pytest.approx(a.char_confidences, abs=1e-3)


def test_an_exported_network_reads_as_its_torch_original(tmp_path: Path) -> None:
    """tools/export_onnx.py on EasyOCR's own weights: the same logits, to float precision."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location(
        "export_onnx", Path(__file__).resolve().parents[2] / "tools" / "export_onnx.py")
    assert spec is not None
    assert spec.loader is not None
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)
    out = tmp_path / "english_g2.onnx"
    export.export("english_g2", out)
    model, _ = load_base_network()
    model.eval()
    onnx = OnnxRecognizer(OnnxOptions(networks=str(out)))
    onnx.warm_up()
    runner = onnx._load()[0]
    for crop in (text_crop("RK735AS"), text_crop("QWERTY7", height=30)):
        with torch.inference_mode():
            expected = model(torch.from_numpy(batch_crops([crop])), None).numpy()[0]
        assert np.abs(runner.outputs(crop) - expected).max() < 1e-3


def test_an_empty_name_in_an_ensemble_is_a_clear_error() -> None:
    engine = EasyOcrRecognizer(EasyOcrOptions(weights="plate+"))
    with pytest.raises(RecognizerError, match="an empty name"):
        engine.warm_up()


def test_missing_weights_are_a_clear_error(tmp_path: Path) -> None:
    engine = EasyOcrRecognizer(EasyOcrOptions(weights=str(tmp_path / "nope.pt")))
    with pytest.raises(RecognizerError, match=r"no file at .*nope\.pt"):
        engine.warm_up()


def test_damaged_weights_are_a_clear_error(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(PLATE_WEIGHTS.read_bytes()[:4096])
    engine = EasyOcrRecognizer(EasyOcrOptions(weights=str(damaged)))
    with pytest.raises(RecognizerError, match="cannot load recognizer weights"):
        engine.warm_up()


def test_line_confidence() -> None:
    assert line_confidence([]) == 0.0
    assert line_confidence([1.0, 1.0, 1.0]) == 1.0
    assert line_confidence([0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5**4 ** (2 / 2))
    assert line_confidence([0.9] * 7) < 0.9
