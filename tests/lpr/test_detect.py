"""The learned text detector and the ONNX reader on rendered plates, at every scale.

The shipped networks run for real here (no torch needed); nothing is downloaded.
"""

from __future__ import annotations

import socket

import cv2
import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("onnxruntime")

from gateway.core import plates
from gateway.lpr import detect
from gateway.lpr.detect import TextDetector, TextLine
from gateway.lpr.localize import iou
from gateway.lpr.pipeline import PlateReader, ReaderOptions
from gateway.lpr.recognize import OnnxOptions, OnnxRecognizer, RecognizerError
from tests.lpr.test_localize import render_plate, render_scene

pytestmark = pytest.mark.slow  # runs the shipped detection and recognition networks

# One plate of each shipped region, as its own formats have it.
PLATES = {
    "us": "7ABC123", "de": "MAB1234", "fr": "AB123CD", "it": "FA456GH", "es": "1234BCD",
    "nl": "12ABC3", "pl": "WA12345", "cz": "1A23456", "sk": "BA123AB", "uk": "AB12CDE",
    "br": "ABC1D23", "in": "MH12AB1234", "ar": "AD054JI",
}


@pytest.fixture(scope="module")
def reader() -> PlateReader:
    engine = PlateReader(ReaderOptions())
    engine.warm_up()
    return engine


def _formats_reader(reader: PlateReader, region: str) -> PlateReader:
    """The shared reader's networks with one region's formats (building networks is slow)."""
    return PlateReader(ReaderOptions(formats=(region,)), recognizer=reader._recognizer)


def test_the_shipped_networks_load_with_no_network_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the reader tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    fresh = PlateReader(ReaderOptions(formats=("br",)))
    fresh.warm_up()
    image, _ = render_scene("ABC1234")
    assert fresh.read(image).text == "ABC1234"


@pytest.mark.parametrize("region", sorted(PLATES))
def test_a_plate_of_each_shipped_format_reads_in_a_scene(reader: PlateReader, region: str) -> None:
    text = PLATES[region]
    assert plates.is_valid(text, plates.formats_for([region]))
    image, truth = render_scene(text, plate_height=50, at=(150, 250))
    reading = _formats_reader(reader, region).read(image)
    assert reading.text == text
    assert iou(reading.candidates[0].box, truth) >= 0.5


@pytest.mark.parametrize("region", sorted(PLATES))
def test_a_plate_that_fills_the_frame_reads(reader: PlateReader, region: str) -> None:
    """A technician's photo of a plate, or a camera zoomed in close: no background at all."""
    text = PLATES[region]
    plate = render_plate(text, height=110)
    assert _formats_reader(reader, region).read(plate).text == text


@pytest.mark.parametrize("width", [60, 90, 160, 320, 600])
def test_one_plate_reads_at_every_size_in_the_frame(reader: PlateReader, width: int) -> None:
    """From 60 px wide in a 640 x 480 scene up to one that fills the frame's width."""
    text = "ABC1234"
    plate_height = round(width * 110 / render_plate(text, height=110).shape[1])
    image, truth = render_scene(text, plate_height=plate_height, at=(20, 200))
    reading = _formats_reader(reader, "br").read(image)
    assert reading.text == text
    assert iou(reading.candidates[0].box, truth) >= 0.3


def test_a_two_row_plate_reads_top_row_first(reader: PlateReader) -> None:
    """A motorcycle's plate: two short rows, a third of a glyph apart."""
    plate = np.full((150, 230, 3), 240, dtype=np.uint8)
    cv2.rectangle(plate, (3, 3), (226, 146), (20, 20, 20), 4)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(plate, "AB", (70, 62), font, 1.9, (20, 20, 20), 6, cv2.LINE_AA)
    cv2.putText(plate, "1234", (22, 128), font, 1.9, (20, 20, 20), 6, cv2.LINE_AA)
    scene = np.full((480, 640, 3), 90, dtype=np.uint8)
    scene[150 : 150 + plate.shape[0], 200 : 200 + plate.shape[1]] = plate
    formats = PlateReader(ReaderOptions(formats=("twoline=LLNNNN",)),
                          recognizer=reader._recognizer)
    assert formats.read(scene).text == "AB1234"


def test_a_road_sign_loses_to_the_plate(reader: PlateReader) -> None:
    image, truth = render_scene("ABC1234", sign="NORTH", size=(1280, 960), at=(500, 600))
    cv2.putText(image, "NORTH", (700, 200), cv2.FONT_HERSHEY_SIMPLEX, 3.0, (240, 240, 240), 8)
    reading = _formats_reader(reader, "br").read(image)
    assert reading.text == "ABC1234"
    assert iou(reading.candidates[0].box, truth) >= 0.5


def _line(x: float, y: float, w: float, h: float) -> TextLine:
    quad = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float32)
    return TextLine(quad=quad, score=0.9)


def test_lines_of_one_row_are_joined_and_rows_stacked() -> None:
    left, right = _line(100, 100, 60, 20), _line(175, 102, 80, 20)
    far = _line(600, 100, 60, 20)
    below = _line(105, 126, 140, 20)
    found = detect.plate_lines([left, right, far, below])
    shapes = {(c.lines, len(c.rows)) for c in found}
    assert (2, 1) in shapes  # left and right joined into one row
    assert (2, 2) in shapes  # a row over another: a two-row plate
    joined = [c for c in found if c.lines == 2 and len(c.rows) == 1]
    assert len(joined) == 1  # the far line is nobody's neighbour
    x0, x1 = joined[0].quad[:, 0].min(), joined[0].quad[:, 0].max()
    assert x0 <= 100
    assert x1 >= 255


def test_a_line_standing_upright_is_kept_horizontal() -> None:
    points = np.array([[0, 0], [20, 0], [20, 100], [0, 100]], dtype=np.float32)
    quad = detect._ordered(points)
    assert np.linalg.norm(quad[1] - quad[0]) > np.linalg.norm(quad[3] - quad[0])


def test_the_detector_finds_nothing_in_a_blank_frame() -> None:
    detector = TextDetector()
    assert detector.detect(np.full((480, 640, 3), 128, dtype=np.uint8)) == []


def test_a_missing_detector_model_is_a_clear_error(tmp_path: object) -> None:
    detector = TextDetector(model=detect.MODELS / "nothing-here.onnx")
    with pytest.raises(detect.DetectorError, match="no model"):
        detector.warm_up()


def test_a_damaged_network_is_a_clear_error(tmp_path: object) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "bad.onnx"
    bad.write_bytes(b"not a model")
    bad.with_name("bad.onnx.json").write_text(
        '{"symbols": "AB", "input": {"height": 64, "channels": 1}}', encoding="utf-8")
    engine = OnnxRecognizer(OnnxOptions(networks=str(bad)))
    with pytest.raises(RecognizerError, match="cannot load"):
        engine.warm_up()


def test_an_unknown_network_is_a_clear_error() -> None:
    with pytest.raises(RecognizerError, match=r"no .*nothing\.onnx"):
        OnnxRecognizer(OnnxOptions(networks="ppocr+nothing.onnx"))
    with pytest.raises(RecognizerError, match="empty name"):
        OnnxRecognizer(OnnxOptions(networks="ppocr+"))


def test_unknown_reader_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="localizer"):
        PlateReader(ReaderOptions(localizer="magic"))
    with pytest.raises(ValueError, match="engine"):
        PlateReader(ReaderOptions(engine="magic"))


def _crop(text: str) -> npt.NDArray[np.uint8]:
    return np.asarray(cv2.cvtColor(render_plate(text, height=64), cv2.COLOR_BGR2GRAY), np.uint8)


@pytest.mark.parametrize("networks", ["ppocr", "plate"])
def test_each_shipped_network_reads_a_plate_crop(networks: str) -> None:
    engine = OnnxRecognizer(OnnxOptions(networks=networks))
    [read] = engine.recognize([_crop("RK735AS")])
    # Neither network is tuned on this drawing of a plate: a glyph may be taken for another.
    assert plates.distance(read.text, "RK735AS") <= 1
    assert len(read.char_confidences) == len(read.text) == len(read.alternatives)


def test_the_shipped_ppocr_models_are_what_their_card_says() -> None:
    import hashlib
    import json

    card = json.loads((detect.MODELS / "ppocrv4.json").read_text(encoding="utf-8"))
    assert card["licence"].startswith("Apache-2.0")
    for name, entry in card["models"].items():
        data = (detect.MODELS / name).read_bytes()
        assert len(data) == entry["bytes"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]


def test_lines_that_share_a_glyph_at_the_seam_are_joined() -> None:
    """The detector may give a plate as two lines that both hold the glyph between them
    (PKX9 and 928): they overlap by about half a height and are one row."""
    left, right = _line(14, 4, 81, 40), _line(76, 6, 62, 38)
    joined = [c for c in detect.plate_lines([left, right]) if c.lines == 2]
    assert len(joined) == 1
