"""`parking-gateway lpr read` and `lpr eval` with a fake reader in the real worker process.

Bad images (empty, truncated JPEG, 1x1, 10000x10000, grey-scale PNG) get a clear error, or a
read for the grey one, and never a crash.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from gateway.cli import cli
from tests.lpr.test_worker import FAKE, fake_image

pytestmark = pytest.mark.slow  # runs the reader from the CLI on rendered photos


def write_png(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    ok, jpeg = cv2.imencode(".jpg", np.full((120, 160, 3), 90, np.uint8))
    assert ok
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(bytes(jpeg)[: len(jpeg) // 2])
    return {
        "empty": empty,
        "truncated": truncated,
        "tiny": write_png(folder / "tiny.png", np.zeros((1, 1, 3), np.uint8)),
        "huge": write_png(folder / "huge.png", np.zeros((10000, 10000), np.uint8)),
        "text": folder / "notes.png",
        "grey": write_png(folder / "grey.png", fake_image("ABC1234")[:, :, 0].copy()),
    }


def invoke(*args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_read_reports_each_bad_image_and_reads_the_rest(bad_images: dict[str, Path]) -> None:
    bad_images["text"].write_text("not an image")
    paths = [str(p) for p in bad_images.values()]
    code, out, err = invoke("lpr", "read", *paths, "--factory", FAKE, "--json")
    assert code == 2
    rows = {Path(row["image"]).name: row for row in json.loads(out)}
    assert rows["empty.jpg"]["error"] == "empty file"
    assert "truncated JPEG" in rows["truncated.jpg"]["error"]
    assert "too small: 1x1" in rows["tiny.png"]["error"]
    assert "too large: 10000x10000" in rows["huge.png"]["error"]
    assert "not a readable image" in rows["notes.png"]["error"]
    assert rows["grey.png"]["plate"] == "ABC1234"
    assert rows["grey.png"]["candidates"][0]["box"] == [5, 6, 60, 20]
    assert "5 of 6 images could not be read" in err
    assert "truncated.jpg: truncated JPEG" in err


def test_read_prints_a_table(tmp_path: Path) -> None:
    image = write_png(tmp_path / "car.png", fake_image("XYZ9876", [0.4] * 7))
    code, out, _ = invoke("lpr", "read", str(image), "--factory", FAKE)
    assert code == 0
    assert "car.png" in out
    assert "low_confidence: guess XYZ9876" in out


def test_read_with_a_reader_that_cannot_start(tmp_path: Path) -> None:
    image = write_png(tmp_path / "car.png", fake_image("XYZ9876"))
    code, _, err = invoke("lpr", "read", str(image), "--factory", "tests.nowhere:Reader")
    assert code == 1
    assert "ModuleNotFoundError" in err


def test_read_with_weights_that_are_not_there(tmp_path: Path) -> None:
    pytest.importorskip("easyocr")
    pytest.importorskip("easyocr_en_models")
    image = write_png(tmp_path / "car.png", fake_image("XYZ9876"))
    missing = tmp_path / "nope.pt"
    code, _, err = invoke("lpr", "read", str(image), "--engine", "easyocr", "--weights",
                          str(missing))
    assert code == 1
    assert f"no file at {missing}" in err


def test_read_with_networks_that_are_not_there(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    image = write_png(tmp_path / "car.png", fake_image("XYZ9876"))
    missing = tmp_path / "nope.onnx"
    code, _, err = invoke("lpr", "read", str(image), "--networks", f"ppocr+{missing}")
    assert code == 1
    assert f"no {missing}" in err


def _labelled(folder: Path, plates: dict[str, tuple[str, tuple[int, int, int, int]]]) -> None:
    folder.mkdir(parents=True)
    for name, (read_as, box) in plates.items():
        write_png(folder / f"{name}.png", fake_image(read_as))
        (folder / f"{name}.txt").write_text(f"{name}.png\t{box[0]}\t{box[1]}\t{box[2]}\t{box[3]}"
                                            f"\t{name}\n")


def test_eval_one_folder_and_folders_of_sets(tmp_path: Path) -> None:
    right = (5, 6, 60, 20)  # where FakeReader says the plate is
    _labelled(tmp_path / "sets" / "br", {"ABC1234": ("ABC1234", right),
                                         "DEF5678": ("DEF5G78", right),
                                         "GHI9012": ("GHI9012", (100, 100, 50, 10))})
    _labelled(tmp_path / "sets" / "eu", {"RK755AJ": ("RK755AJ", right)})

    code, out, _ = invoke("lpr", "eval", str(tmp_path / "sets" / "br"), "--factory", FAKE,
                          "--json")
    assert code == 0
    figures = json.loads(out)
    assert figures["images"] == 3
    assert figures["exact"] == 2
    assert figures["accuracy"] == pytest.approx(2 / 3, abs=1e-3)
    assert figures["within_one_confusable"] == 1.0
    assert figures["localized"] == pytest.approx(2 / 3, abs=1e-3)
    assert figures["p50_ms"] > 0
    assert figures["worker_peak_rss_mb"] > 10

    code, out, _ = invoke("lpr", "eval", str(tmp_path / "sets"), "--factory", FAKE, "--json")
    assert code == 0
    both = json.loads(out)
    assert sorted(both) == ["br", "eu"]
    assert both["eu"]["exact"] == 1


def test_eval_reports_what_the_lane_would_take_and_leaves_the_misses(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    right = (5, 6, 60, 20)
    for label, read_as, conf in [("ABC1234", "ABC1234", 0.9),  # right, taken
                                 ("DEF5678", "DEF5G78", 0.9),  # wrong, taken
                                 ("GHM9012", "GHH9012", 0.4)]:  # wrong, not taken
        write_png(folder / f"{label}.png", fake_image(read_as, [conf] * 7))
        (folder / f"{label}.txt").write_text(f"{label}.png\t5\t6\t60\t20\t{label}\n")
    misses = tmp_path / "misses"

    code, out, _ = invoke("lpr", "eval", str(folder), "--factory", FAKE, "--json",
                          "--misses", str(misses))
    assert code == 0
    figures = json.loads(out)
    assert figures["exact"] == 1
    assert figures["accepted"] == pytest.approx(2 / 3, abs=1e-3)
    assert figures["accepted_right"] == pytest.approx(1 / 3, abs=1e-3)
    assert figures["confident_wrong"] == pytest.approx(1 / 3, abs=1e-3)
    assert figures["confident_wrong_count"] == 1
    assert figures["threshold"] == 0.6
    assert sorted(map(tuple, (e.values() for e in figures["per_char_errors"]))) == [
        ("6", "G", 1), ("M", "H", 1)]
    assert sorted(p.name for p in misses.iterdir()) == [
        "DEF5678.json", "DEF5678.png", "GHM9012.json", "GHM9012.png"]
    miss = json.loads((misses / "DEF5678.json").read_text())
    assert (miss["label"], miss["read"], miss["accepted"]) == ("DEF5678", "DEF5G78", "DEF5G78")
    assert miss["box"] == list(right)
    assert miss["char_confidences"] == [0.9] * 7
    assert (misses / "DEF5678.png").read_bytes().startswith(b"\x89PNG")

    code, out, _ = invoke("lpr", "eval", str(folder), "--factory", FAKE, "--threshold", "0.3")
    assert code == 0
    assert "confident_wrong_count" in out
    assert "6>G 1, M>H 1" in out  # per_char_errors, as the table shows them


def test_eval_of_several_sets_leaves_each_sets_misses_apart(tmp_path: Path) -> None:
    right = (5, 6, 60, 20)
    _labelled(tmp_path / "sets" / "br", {"DEF5678": ("DEF5G78", right)})
    _labelled(tmp_path / "sets" / "eu", {"RK755AJ": ("RK755AJ", right)})
    misses = tmp_path / "misses"
    code, out, _ = invoke("lpr", "eval", str(tmp_path / "sets"), "--factory", FAKE, "--json",
                          "--misses", str(misses))
    assert code == 0
    assert json.loads(out)["br"]["confident_wrong_count"] == 1
    assert sorted(str(p.relative_to(misses)) for p in misses.rglob("*")) == [
        "br", "br/DEF5678.json", "br/DEF5678.png"]


def test_eval_of_a_folder_without_labels(tmp_path: Path) -> None:
    code, _, err = invoke("lpr", "eval", str(tmp_path), "--factory", FAKE)
    assert code == 2
    assert "no labelled photos" in err
