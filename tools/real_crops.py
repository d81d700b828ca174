"""Cut real plate crops out of labelled photos, as the reader cuts them, for training.

Usage: python tools/real_crops.py DIR [DIR...] --out crops.npz [--part train|held-out|all]

Each photo in an openalpr-layout folder (NAME.jpg + NAME.txt with the plate's box and text)
goes through the shipped detector exactly as `PlateReader` runs it; the candidate that
covers the labelled box best (the whole image, for a crop) is rectified as the reader
rectifies it and kept with the label's text. A candidate that plainly holds something else
(PP-OCR's read is more than two edits from the label) is left out: training on a crop that
lost half its glyphs teaches the network to invent them.

Splits: a plate's text decides its part (sha256 of the text; one in five is held out), so
the same plate is never on both sides and the split does not depend on file order. Use the
held-out part, never the training part, to choose settings.

The crops stay on the machine that made them: the photos' licences (AGPL, GPL) allow
training on them but the package must not ship them.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from gateway.drivers.image import decode_image
from gateway.lpr import detect
from gateway.lpr.evaluate import edit_distance, load_samples
from gateway.lpr.localize import iou
from gateway.lpr.pipeline import detected_candidates
from gateway.lpr.recognize import OnnxOptions, OnnxRecognizer

HELD_OUT_EVERY = 5
MAX_EDITS = 2


def part_of(plate: str) -> str:
    """'held-out' for one plate text in five, 'train' for the others."""
    digest = hashlib.sha256(plate.encode("ascii")).digest()
    return "held-out" if digest[0] % HELD_OUT_EVERY == 0 else "train"


def crops_of(folder: Path, part: str, detector: detect.TextDetector,
             reader: OnnxRecognizer) -> tuple[list[np.ndarray], list[str], int]:
    crops: list[np.ndarray] = []
    texts: list[str] = []
    skipped = 0
    for sample in load_samples(folder):
        if part != "all" and part_of(sample.plate) != part:
            continue
        image = decode_image(sample.image.read_bytes())
        found = detected_candidates(detector, image, limit=12)
        if not found:
            skipped += 1
            continue
        best = max(found, key=lambda c: iou(c.box, sample.box))
        if iou(best.box, sample.box) < 0.2:
            skipped += 1
            continue
        [read] = reader.recognize([best.crop])
        if edit_distance(read.text, sample.plate) > MAX_EDITS:
            skipped += 1
            continue
        crops.append(best.crop)
        texts.append(sample.plate)
    return crops, texts, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--part", choices=["train", "held-out", "all"], default="train")
    args = parser.parse_args(argv)
    detector = detect.TextDetector()
    reader = OnnxRecognizer(OnnxOptions(networks="ppocr"))
    all_crops: list[np.ndarray] = []
    all_texts: list[str] = []
    for folder in args.folders:
        crops, texts, skipped = crops_of(folder, args.part, detector, reader)
        print(f"{folder}: {len(crops)} crops, {skipped} left out", file=sys.stderr, flush=True)
        all_crops += crops
        all_texts += texts
    holder = np.empty(len(all_crops), dtype=object)
    holder[:] = all_crops
    np.savez_compressed(args.out, crops=holder, texts=np.array(all_texts))
    print(f"{len(all_crops)} crops -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
