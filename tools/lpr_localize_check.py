"""Tuning aid: how often does localization put the labelled plate among its candidates?

Usage: python tools/lpr_localize_check.py DIR [DIR...] [--limit N] [--dump OUTDIR]
Prints, per folder, the share of photos whose plate is the 1st / within the top 3 /
anywhere among the candidates (candidate centre inside the labelled box), and
the localization time. --dump writes each photo's candidate crops for viewing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2

from gateway.lpr.evaluate import decode, load_samples
from gateway.lpr.localize import find_candidates, iou


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--dump", type=Path)
    args = parser.parse_args()
    for folder in args.folders:
        samples = load_samples(folder)[: args.limit]
        ranks: list[int] = []
        ious: list[float] = []
        times: list[float] = []
        for s in samples:
            image = decode(s.image.read_bytes())
            assert image is not None
            t = time.perf_counter()
            cands = find_candidates(image)
            times.append((time.perf_counter() - t) * 1000)
            rank = -1
            x, y, w, h = s.box
            for i, c in enumerate(cands):
                cx, cy = c.quad.mean(axis=0)
                if x <= cx <= x + w and y <= cy <= y + h:
                    rank = i
                    break
            ranks.append(rank)
            ious.append(max((iou(c.box, s.box) for c in cands), default=0.0))
            if args.dump:
                args.dump.mkdir(parents=True, exist_ok=True)
                for i, c in enumerate(cands):
                    tag = "HIT" if i == rank else ""
                    cv2.imwrite(str(args.dump / f"{s.image.stem}_{i}{tag}.png"), c.crop)
            if rank != 0:
                print(f"  {s.image.name}: rank {rank} of {len(cands)} best-iou {ious[-1]:.2f}")
        n = len(samples)
        print(
            f"{folder}: n={n} top1={sum(r == 0 for r in ranks) / n:.3f} "
            f"top3={sum(0 <= r < 3 for r in ranks) / n:.3f} "
            f"any={sum(r >= 0 for r in ranks) / n:.3f} "
            f"iou>=0.5={sum(v >= 0.5 for v in ious) / n:.3f} "
            f"p50={statistics.median(times):.1f}ms max={max(times):.1f}ms"
        )


if __name__ == "__main__":
    main()
