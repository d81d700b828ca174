"""The frame reader end to end (real EasyOCR on rendered scenes) and its ranking logic (fakes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from gateway.lpr import localize
from gateway.lpr.evaluate import LabelError, evaluate, load_samples, parse_label
from gateway.lpr.localize import PlateCandidate, iou
from gateway.lpr.pipeline import Candidate, FrameReading, PlateReader, ReaderOptions
from gateway.lpr.recognize import EasyOcrRecognizer, TextRead
from tests.lpr.test_localize import render_scene

pytestmark = pytest.mark.slow  # runs the shipped networks on rendered scenes


class ScriptedRecognizer:
    """Answers each crop with the next scripted read; counts the crops it was shown."""

    def __init__(self, reads: Sequence[tuple[str, Sequence[float]]]) -> None:
        self._reads = list(reads)
        self.crops_seen = 0
        self.warmed = False

    def warm_up(self) -> None:
        self.warmed = True

    def recognize(self, crops: Sequence[npt.NDArray[np.uint8]]) -> list[TextRead]:
        out = []
        for _ in crops:
            text, confs = self._reads[min(self.crops_seen, len(self._reads) - 1)]
            self.crops_seen += 1
            out.append(
                TextRead(
                    text=text, confidence=min(confs, default=0.0), char_confidences=list(confs)
                )
            )
        return out


@pytest.fixture(scope="module")
def engine() -> EasyOcrRecognizer:
    pytest.importorskip("easyocr")
    pytest.importorskip("easyocr_en_models")
    recognizer = EasyOcrRecognizer()
    recognizer.warm_up()
    return recognizer


@pytest.mark.parametrize(
    ("text", "formats", "kwargs"),
    [
        ("ABC1234", ("br",), {}),
        ("7ABC123", ("us",), {"tilt": 5.0}),
        ("ABC1D23", ("br",), {"plate_height": 50, "seed": 7}),
    ],
)
def test_reads_a_rendered_plate_in_a_scene(
    engine: EasyOcrRecognizer, text: str, formats: tuple[str, ...], kwargs: dict[str, object]
) -> None:
    reader = PlateReader(ReaderOptions(formats=formats), recognizer=engine)
    image, truth = render_scene(text, **kwargs)  # type: ignore[arg-type]
    reading = reader.read(image)
    assert reading.error is None
    best = reading.candidates[0]
    assert best.text == text
    assert iou(best.box, truth) >= 0.5
    assert len(best.char_confidences) == len(best.text)
    assert 0.0 < best.confidence <= 1.0
    assert best.crop.ndim == 2
    assert best.crop.shape[0] == 64
    assert {"localize", "recognize", "total"} <= set(reading.timings_ms)


def test_a_sign_that_looks_like_a_plate_row_loses_to_the_plate(engine: EasyOcrRecognizer) -> None:
    reader = PlateReader(ReaderOptions(formats=("br",)), recognizer=engine)
    image, truth = render_scene("ABC1234", sign="NO PARKING", size=(1280, 960), at=(500, 600))
    reading = reader.read(image)
    assert reading.text == "ABC1234"
    assert iou(reading.candidates[0].box, truth) >= 0.5


def test_read_bytes_times_decoding_too(engine: EasyOcrRecognizer) -> None:
    reader = PlateReader(ReaderOptions(formats=("br",)), recognizer=engine)
    image, _ = render_scene("ABC1234")
    ok, jpeg = cv2.imencode(".jpg", image)
    assert ok
    reading = reader.read_bytes(jpeg.tobytes())
    assert reading.text == "ABC1234"
    assert {"decode", "localize", "recognize", "total"} <= set(reading.timings_ms)
    assert reading.timings_ms["total"] >= reading.timings_ms["decode"]


def _jpeg(image: npt.NDArray[np.uint8]) -> bytes:
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "empty file"),
        (_jpeg(np.full((240, 320, 3), 128, np.uint8))[:200], "truncated JPEG"),
        (b"not an image at all", "not a readable image"),
    ],
    ids=["empty", "truncated-jpeg", "garbage"],
)
def test_undecodable_bytes_give_an_error_not_an_exception(data: bytes, error: str) -> None:
    reader = PlateReader(recognizer=ScriptedRecognizer([("X", [1.0])]))
    reading = reader.read_bytes(data)
    assert reading.candidates == []
    assert reading.error is not None
    assert error in reading.error
    assert reading.text == ""


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((0, 0), np.uint8),
        np.full((10_000, 10_000), 200, np.uint8),
    ],
    ids=["1x1", "empty", "10000x10000"],
)
def test_unusable_frames_give_a_clear_reading(image: npt.NDArray[np.uint8]) -> None:
    recognizer = ScriptedRecognizer([("X", [1.0])])
    reading = PlateReader(recognizer=recognizer).read(image)
    assert reading.candidates == []
    if image.size > 100:
        assert reading.error is None  # a big blank frame is valid, it just holds no plate
    else:
        assert reading.error
    assert recognizer.crops_seen == 0


def test_a_grey_png_is_read() -> None:
    image, _ = render_scene("ABC1234")
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    assert ok
    recognizer = ScriptedRecognizer([("ABC1234", [0.99] * 7)])
    reading = PlateReader(ReaderOptions(formats=("br",)), recognizer=recognizer).read_bytes(
        png.tobytes()
    )
    assert reading.text == "ABC1234"


def test_a_read_is_corrected_towards_the_lots_formats_in_their_order() -> None:
    image, _ = render_scene("NTO1053")
    # "NT01053" is a valid Polish plate as read; a Brazilian lot lists "br" first.
    recognizer = ScriptedRecognizer([("NT01053", [0.95, 0.95, 0.6, 0.95, 0.95, 0.95, 0.95])])
    reading = PlateReader(ReaderOptions(formats=("br", "eu")), recognizer=recognizer).read(image)
    best = reading.candidates[0]
    assert (best.text, best.raw_text, best.format) == ("NTO1053", "NT01053", "br-old")
    assert len(best.char_confidences) == 7


def test_a_read_that_fits_a_later_group_as_read_beats_two_swaps_into_an_earlier_one() -> None:
    image, _ = render_scene("M5XSE")
    # "M5XSE" is a British plate as read; two swaps would make it the German "MSX5E".
    recognizer = ScriptedRecognizer([("M5XSE", [0.99, 0.7, 0.99, 0.7, 0.99])])
    reading = PlateReader(ReaderOptions(formats=("eu", "uk")), recognizer=recognizer).read(image)
    assert (reading.text, reading.candidates[0].format) == ("M5XSE", "uk-prefix")
    # With no later group to fit as read, the home group's correction still stands.
    recognizer = ScriptedRecognizer([("M5XSE", [0.99, 0.7, 0.99, 0.7, 0.99])])
    reading = PlateReader(ReaderOptions(formats=("eu", "br")), recognizer=recognizer).read(image)
    assert (reading.text, reading.candidates[0].format) == ("MSX5E", "de-eh")


def test_a_doubtful_extra_character_at_an_end_is_dropped_to_fit_a_format() -> None:
    image, _ = render_scene("PUT6858")
    recognizer = ScriptedRecognizer([("IPUT6858", [0.3] + [0.95] * 7)])
    reading = PlateReader(ReaderOptions(formats=("br",)), recognizer=recognizer).read(image)
    assert reading.text == "PUT6858"


def test_a_confident_extra_character_is_kept() -> None:
    image, _ = render_scene("PUT6858")
    recognizer = ScriptedRecognizer([("IPUT6858", [0.99] * 8)])
    reading = PlateReader(ReaderOptions(formats=("br",)), recognizer=recognizer).read(image)
    assert reading.text == "IPUT6858"
    assert reading.candidates[0].format is None


def test_a_shortened_read_that_fits_as_read_beats_the_whole_read_fitted_by_swaps() -> None:
    image, _ = render_scene("4B21875")
    # A frame edge read as "1" before a Czech plate: the whole read can be made a Polish
    # plate ("IAB21875", two swaps), but without its doubtful first character it fits as read.
    recognizer = ScriptedRecognizer([("14B21875", [0.58] + [0.99] * 7)])
    reading = PlateReader(ReaderOptions(formats=("eu",)), recognizer=recognizer).read(image)
    assert (reading.text, reading.candidates[0].format) == ("4B21875", "cz")


def test_a_middle_character_is_kept_when_dropping_it_gains_too_little() -> None:
    image, _ = render_scene("SI819AK")
    # Both "SI819AK" (SK) and "S819AK" (NL) fit as read; an "I" read at 0.45 is more
    # likely a thin glyph than a seal.
    confs = [0.99, 0.45, 0.99, 0.99, 0.99, 0.99, 0.99]
    recognizer = ScriptedRecognizer([("SI819AK", confs)])
    reading = PlateReader(ReaderOptions(formats=("eu",)), recognizer=recognizer).read(image)
    assert reading.text == "SI819AK"
    doubtful = ScriptedRecognizer([("SI819AK", [0.99, 0.1, 0.99, 0.99, 0.99, 0.99, 0.99])])
    reading = PlateReader(ReaderOptions(formats=("eu",)), recognizer=doubtful).read(image)
    assert reading.text == "S819AK"


def test_a_doubtful_character_between_glyph_groups_is_dropped_to_fit_a_format() -> None:
    image, _ = render_scene("RK735AS")
    # A seal between "RK" and "735" read as an "E", with little confidence.
    confs = [0.95, 0.95, 0.3, 0.95, 0.95, 0.95, 0.95, 0.95]
    recognizer = ScriptedRecognizer([("RKE735AS", confs)])
    reading = PlateReader(ReaderOptions(formats=("it",)), recognizer=recognizer).read(image)
    assert reading.text == "RK735AS"
    confident = ScriptedRecognizer([("RKE735AS", [0.95] * 8)])
    reading = PlateReader(ReaderOptions(formats=("it",)), recognizer=confident).read(image)
    assert reading.text == "RKE735AS"
    # PP-OCR reads a Czech or Slovak plate's emblem as an 8 at 0.7 to 0.9: still a seal.
    fairly_sure = ScriptedRecognizer([("4B480262", [1.0, 0.99, 1.0, 0.86, 1.0, 1.0, 1.0, 1.0])])
    reading = PlateReader(ReaderOptions(formats=("cz",)), recognizer=fairly_sure).read(image)
    assert reading.text == "4B40262"


def test_a_confident_first_read_stops_the_search() -> None:
    image, _ = render_scene("ABC1234")
    recognizer = ScriptedRecognizer([("ABC1234", [0.99] * 7)])
    PlateReader(ReaderOptions(formats=("br",)), recognizer=recognizer).read(image)
    assert recognizer.crops_seen == 1


def test_a_sure_read_that_fits_no_format_does_not_stop_the_search() -> None:
    """A car's badge (ROBIN) reads as surely as a plate, and US vanity plates make it valid;
    only a read that fits a lot's format settles the frame."""
    image, _ = render_scene("4HGT934", sign="ROBIN")
    cv2.putText(image, "ROBIN", (300, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (230, 230, 230), 4)
    recognizer = ScriptedRecognizer([("ROBIN", [0.99] * 5), ("4HGT934", [0.97] * 7)])
    reading = PlateReader(ReaderOptions(formats=("us",)), recognizer=recognizer).read(image)
    assert recognizer.crops_seen > 1
    assert reading.text == "4HGT934"
    stubborn = ScriptedRecognizer([("ROBIN", [0.99] * 5), ("4HGT934", [0.97] * 7)])
    options = ReaderOptions(formats=("us",), format_to_settle=False)
    PlateReader(options, recognizer=stubborn).read(image)
    assert stubborn.crops_seen == 1


def test_a_doubtful_first_read_looks_at_more_crops_and_keeps_the_best() -> None:
    image, _ = render_scene("ABC1234")
    recognizer = ScriptedRecognizer([("AB", [0.4, 0.4]), ("ABC1234", [0.97] * 7)])
    reading = PlateReader(ReaderOptions(formats=("br",)), recognizer=recognizer).read(image)
    assert recognizer.crops_seen > 1
    assert reading.text == "ABC1234"
    scores = [c.score for c in reading.candidates]
    assert scores == sorted(scores, reverse=True)
    assert len({c.box for c in reading.candidates}) == len(reading.candidates)


def test_the_second_look_reads_the_other_renderings_of_every_candidate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The plate is the second candidate, and only its row rendering (an edge region's glyph
    # row, say) reads well; the second look used to read that for the first candidate only.
    def crop(shade: int) -> npt.NDArray[np.uint8]:
        return np.full((64, 200), shade, dtype=np.uint8)

    quad = np.zeros((4, 2), dtype=np.float32)
    found = [
        PlateCandidate((0, 0, 90, 30), quad, 0.5, crop(10), "glyphs", 3, [crop(20)]),
        PlateCandidate((200, 200, 90, 30), quad, 0.1, crop(30), "edges", 7, [crop(40)]),
    ]
    monkeypatch.setattr(localize, "find_candidates", lambda *_a, **_k: found)
    reads = {10: ("EXIT", [0.5] * 4), 20: ("EX1T", [0.5] * 4), 30: ("ERK101AD", [0.7] * 8),
             40: ("RK101AO", [0.97] * 7)}

    class ByShade(ScriptedRecognizer):
        def recognize(self, crops: Sequence[npt.NDArray[np.uint8]]) -> list[TextRead]:
            out = []
            for c in crops:
                text, confs = reads[int(c[0, 0])]
                out.append(TextRead(text, min(confs), list(confs)))
            return out

    image = np.full((240, 320, 3), 128, dtype=np.uint8)
    options = ReaderOptions(formats=("eu",), localizer="glyphs")
    reading = PlateReader(options, recognizer=ByShade([])).read(image)
    assert reading.text == "RK101AO"
    assert reading.candidates[0].box == (200, 200, 90, 30)


def test_warm_up_warms_the_recognizer() -> None:
    recognizer = ScriptedRecognizer([("ABC1234", [0.9] * 7)])
    PlateReader(recognizer=recognizer).warm_up()
    assert recognizer.warmed


# --- evaluation ---------------------------------------------------------------------------------


class FixedReader:
    """Reads every frame as the same plate, in the same box."""

    def __init__(self, text: str, box: tuple[int, int, int, int]) -> None:
        self.text, self.box = text, box
        self.warmed = False

    def warm_up(self) -> None:
        self.warmed = True

    def read(self, image: npt.NDArray[np.uint8]) -> FrameReading:
        crop = np.zeros((64, 64), np.uint8)
        cand = Candidate(self.text, 0.9, [0.9] * len(self.text), self.box, crop)
        return FrameReading(candidates=[cand])


def _write_sample(folder: Path, name: str, plate: str, box: tuple[int, int, int, int]) -> None:
    image, _ = render_scene(plate)
    cv2.imwrite(str(folder / f"{name}.jpg"), image)
    x, y, w, h = box
    (folder / f"{name}.txt").write_text(f"{name}.jpg\t{x}\t{y}\t{w}\t{h}\t{plate}\n")


def test_evaluate_gives_the_issues_figures(tmp_path: Path) -> None:
    _write_sample(tmp_path, "a", "ABC1234", (100, 100, 200, 50))
    _write_sample(tmp_path, "b", "A8C1234", (400, 300, 100, 30))  # one confusable away (8/B)
    _write_sample(tmp_path, "c", "XYZ9876", (10, 10, 100, 30))
    (tmp_path / "notes.txt").write_text("not a label\n")
    reader = FixedReader("ABC1234", (100, 100, 200, 50))
    seen: list[str] = []
    figures = evaluate(tmp_path, reader, progress=lambda r: seen.append(r.sample.image.name))
    assert list(figures) == [
        "images",
        "exact",
        "accuracy",
        "within_one_confusable",
        "localized",
        "p50_ms",
        "p95_ms",
        "worker_peak_rss_mb",
        "accepted",
        "accepted_right",
        "confident_wrong",
        "confident_wrong_count",
        "per_char_errors",
        "threshold",
        "char_threshold",
    ]
    assert (figures["images"], figures["exact"]) == (3, 1)
    assert figures["accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert figures["within_one_confusable"] == pytest.approx(2 / 3, abs=1e-4)
    assert figures["localized"] == pytest.approx(1 / 3, abs=1e-4)
    assert 0 <= figures["p50_ms"] <= figures["p95_ms"]
    assert figures["worker_peak_rss_mb"] > 0
    assert seen == ["a.jpg", "b.jpg", "c.jpg"]
    assert reader.warmed


class BrokenReader:
    def read(self, image: npt.NDArray[np.uint8]) -> FrameReading:
        raise RuntimeError("engine crashed")


def test_a_reader_failure_or_a_corrupt_photo_scores_a_miss(tmp_path: Path) -> None:
    _write_sample(tmp_path, "a", "ABC1234", (100, 100, 200, 50))
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (tmp_path / "b.txt").write_text("b.jpg\t1\t2\t3\t4\tXYZ9876\n")
    figures = evaluate(tmp_path, BrokenReader())
    assert (figures["images"], figures["exact"], figures["localized"]) == (2, 0, 0.0)


def test_labels_are_parsed_and_checked(tmp_path: Path) -> None:
    _write_sample(tmp_path, "ok", "ABC1234", (1, 2, 3, 4))
    sample = parse_label(tmp_path / "ok.txt")
    assert (sample.box, sample.plate, sample.image.name) == ((1, 2, 3, 4), "ABC1234", "ok.jpg")
    (tmp_path / "short.txt").write_text("ok.jpg\t1\t2\n")
    (tmp_path / "nan.txt").write_text("ok.jpg\tx\t2\t3\t4\tABC\n")
    (tmp_path / "gone.txt").write_text("gone.jpg\t1\t2\t3\t4\tABC\n")
    for bad in ("short", "nan", "gone"):
        with pytest.raises(LabelError):
            parse_label(tmp_path / f"{bad}.txt")
    assert [s.plate for s in load_samples(tmp_path)] == ["ABC1234"]
    with pytest.raises(LabelError):
        load_samples(tmp_path / "missing")


def test_a_format_digit_from_the_network_beats_dropping_a_glyph_it_saw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The read LTAZ530 (a California 4TAZ530, its open 4 taken for L at 0.47): dropping the
    L fits the US series LLLNNN as read, but the glyph is there; the network's own digit in
    its place fits NLLLNNN and wins."""
    alts = [[("L", 0.47), ("A", 0.46), ("4", 0.009)]] + [[(ch, 1.0), ("1", 0.0)]
                                                          for ch in "TAZ530"]

    class WithEvidence(ScriptedRecognizer):
        def recognize(self, crops: Sequence[npt.NDArray[np.uint8]]) -> list[TextRead]:
            confs = [0.47] + [1.0] * 6
            return [TextRead("LTAZ530", min(confs), confs, alts) for _ in crops]

    quad = np.zeros((4, 2), dtype=np.float32)
    found = [PlateCandidate((0, 0, 90, 30), quad, 0.9, np.full((64, 200), 9, np.uint8),
                            "glyphs", 7, [])]
    reader = PlateReader(ReaderOptions(formats=("us",), localizer="glyphs"),
                         recognizer=WithEvidence([]))
    monkeypatch.setattr(localize, "find_candidates", lambda *_a, **_k: found)
    reading = reader.read(np.full((240, 320, 3), 128, dtype=np.uint8))
    assert reading.text == "4TAZ530"
    assert reading.candidates[0].char_confidences[0] <= 0.5
