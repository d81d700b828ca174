"""Consensus across frames: deliberately noisy per-frame reads still give the plate."""

from __future__ import annotations

import random

import pytest

from gateway.core.plates import CONFUSABLES, formats_for
from gateway.lpr.consensus import PlateRead, vote


def read(text: str, conf: float = 0.9, frame: int = 0, *, confs: list[float] | None = None,
         box: tuple[int, int, int, int] = (0, 0, 100, 20), crop: bytes | None = None) -> PlateRead:
    per_char = tuple(confs) if confs is not None else (conf,) * len(text)
    return PlateRead(text, conf if confs is None else sum(confs) / len(confs), per_char, box,
                     frame, crop)


def frames(*texts: str, conf: float = 0.9) -> list[PlateRead]:
    return [read(t, conf, i) for i, t in enumerate(texts)]


def test_every_frame_wrong_somewhere_still_votes_the_plate() -> None:
    # No single frame is right; each error sits in a different place.
    result = vote(frames("AB8123CD", "A81234CD", "AB1Z34CD", "AB1234C0", "AB1234CD"))
    assert result.plate == "AB1234CD"
    assert result.frames_agreeing == 1
    assert result.frames_with_reads == 5


def test_no_frame_right_at_all() -> None:
    result = vote(frames("XB1234CD", "AX1234CD", "ABX234CD", "AB1X34CD", "AB12X4CD"))
    assert result.guess == "AB1234CD"
    assert result.frames_agreeing == 0


def test_confidence_weights_the_vote() -> None:
    # Two doubtful frames read 8, one sure frame reads B: the sure one wins the position.
    reads = [read("ABC1234", frame=0, confs=[0.9, 0.2, 0.9, 0.9, 0.9, 0.9, 0.9]),
             read("A8C1234", frame=1, confs=[0.9, 0.2, 0.9, 0.9, 0.9, 0.9, 0.9]),
             read("A8C1234", frame=2, confs=[0.9, 0.2, 0.9, 0.9, 0.9, 0.9, 0.9]),
             read("ABC1234", frame=3, confs=[0.9, 0.95, 0.9, 0.9, 0.9, 0.9, 0.9])]
    result = vote(reads, threshold=0.0)
    assert result.guess == "ABC1234"
    # The disputed position is the least sure.
    assert min(result.char_confidences) == result.char_confidences[1]


def test_a_dropped_or_extra_character_is_aligned() -> None:
    result = vote(frames("KA01AB1234", "KA01AB234", "KA01AB1234", "KA01AAB1234"))
    assert result.plate == "KA01AB1234"


def test_other_text_in_the_frames_does_not_vote() -> None:
    # A sign ("PARKING") and a second car's plate are seen in some frames too.
    reads = [read("WX12ABC", 0.9, 0), read("PARKING", 0.95, 0),
             read("WX12A8C", 0.8, 1), read("ZZ99ZZZ", 0.6, 1),
             read("WX12ABC", 0.85, 2)]
    result = vote(reads)
    assert result.plate == "WX12ABC"
    assert result.frames_agreeing == 2


def test_disagreeing_frames_fall_below_the_threshold() -> None:
    result = vote(frames("ABC1234", "XYZ9876", "KLM5555"), threshold=0.6)
    assert result.plate is None
    assert result.reason == "low_confidence"
    assert result.guess is not None
    assert result.confidence < 0.6


def test_agreement_raises_confidence_over_a_single_doubtful_read() -> None:
    one = vote(frames("ABC1234", conf=0.7), threshold=0.0)
    three = vote(frames("ABC1234", "ABC1234", "ABC1234", conf=0.7), threshold=0.0)
    assert one.confidence == pytest.approx(0.7)
    assert three.confidence == pytest.approx(0.7)
    noisy = vote(frames("ABC1234", "ABC1Z34", conf=0.7), threshold=0.0)
    assert noisy.confidence < one.confidence


def test_format_correction_after_the_vote() -> None:
    br = formats_for(["br"])
    # Every frame reads the O of a Mercosul plate's digit as a letter.
    result = vote(frames("ABC1D2O", "ABC1D2O", "A8C1D2O"), formats=br)
    assert result.plate == "ABC1D20"
    assert result.format == "br-mercosul"
    assert result.corrected_from == "ABC1D2O"


def test_the_crop_and_box_come_from_an_agreeing_read() -> None:
    reads = [read("ABC1234", 0.95, 0, box=(1, 1, 1, 1), crop=b"wrong"),
             read("ABC1234", 0.8, 1, box=(5, 5, 50, 10), crop=b"right-a"),
             read("ABC1234", 0.9, 2, box=(6, 6, 50, 10), crop=b"right-b")]
    reads[0] = read("A8C1234", 0.95, 0, box=(1, 1, 1, 1), crop=b"wrong")
    result = vote(reads)
    assert result.plate == "ABC1234"
    assert result.crop_png == b"right-b"
    assert result.box == (6, 6, 50, 10)


def test_the_readers_own_ranking_counts() -> None:
    # One frame, two candidates: the reader preferred the plate over a slightly surer sticker.
    reads = [PlateRead("AB123CD", 0.8, (0.8,) * 7, (0, 0, 90, 20), 0, None, 0),
             PlateRead("ZX98", 0.9, (0.9,) * 4, (5, 50, 30, 10), 0, None, 1)]
    assert vote(reads).plate == "AB123CD"


def test_nothing_read() -> None:
    assert vote([]).reason == "no_read"
    assert vote(frames("", "--")).reason == "no_read"


def test_random_noise_converges() -> None:
    """Seven frames, each character wrong with 15 % chance (half of it a confusable swap).

    The surest single frame is right about half the time; the vote nearly always is.
    """
    rng = random.Random(7)
    plate = "MH12DE1433"
    swaps = dict(CONFUSABLES)
    voted = best_single = 0
    for _ in range(100):
        noisy = []
        for i in range(7):
            chars = [
                (swaps.get(c, c) if rng.random() < 0.5 else rng.choice("ABCDEFGH0123456789"))
                if rng.random() < 0.15 else c
                for c in plate
            ]
            noisy.append(read("".join(chars), rng.uniform(0.5, 0.95), i))
        voted += vote(noisy, threshold=0.0).guess == plate
        best_single += max(noisy, key=lambda r: r.confidence).text == plate
    assert best_single < 55
    assert voted >= 90, (voted, best_single)


def test_one_doubtful_character_keeps_a_sure_looking_plate_out() -> None:
    """A mean of 0.93 hides a glyph read at 0.55: the lane asks a person instead."""
    doubtful = PlateRead("ABC1234", 0.93, (1.0, 1.0, 1.0, 0.55, 1.0, 1.0, 1.0), (0, 0, 10, 5),
                         frame=0)
    assert vote([doubtful], threshold=0.6).plate == "ABC1234"
    floored = vote([doubtful], threshold=0.6, char_threshold=0.8)
    assert floored.plate is None
    assert (floored.guess, floored.reason) == ("ABC1234", "low_confidence")
    assert vote([doubtful], threshold=0.6, char_threshold=0.5).plate == "ABC1234"
