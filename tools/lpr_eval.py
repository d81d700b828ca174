"""Tuning aid: evaluate the plate reader on openalpr-layout folders, listing every miss.

Usage: python tools/lpr_eval.py DIR [DIR...] [--limit N] [--set field=value ...]
`--set` overrides a ReaderOptions field (e.g. --set first_pass=3 --set formats=br).
The figures are those of `gateway.lpr.evaluate.evaluate`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
from pathlib import Path
from typing import Any

from gateway.lpr.evaluate import SampleResult, evaluate
from gateway.lpr.pipeline import PlateReader, ReaderOptions


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _options(pairs: list[str]) -> ReaderOptions:
    fields = {f.name: f for f in dataclasses.fields(ReaderOptions)}
    values: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        kind = str(fields[key].type)
        if "bool" in kind:
            values[key] = raw.lower() in ("1", "true", "yes")
        elif "tuple" in kind:
            values[key] = tuple(v for v in raw.split(",") if v)
        elif "float" in kind:
            values[key] = float(raw)
        elif "int" in kind:
            values[key] = int(raw)
        else:
            values[key] = raw
    return ReaderOptions(**values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    reader = PlateReader(_options(args.set))

    cpu_ms: list[float] = []
    last = [_cpu()]

    def show(result: SampleResult) -> None:
        now = _cpu()
        cpu_ms.append((now - last[0]) * 1000.0)
        last[0] = now
        if result.read != result.sample.plate and not args.quiet:
            print(
                f"  miss {result.sample.image.name}: read {result.read!r}"
                f" want {result.sample.plate!r}"
                f" loc={result.localized} {result.elapsed_ms:.0f}ms"
            )

    for folder in args.folders:
        figures = evaluate(folder, reader, progress=show, limit=args.limit)
        print(folder.name, json.dumps(figures), f"cpu_p50_ms={statistics.median(cpu_ms):.0f}")
        cpu_ms.clear()


if __name__ == "__main__":
    main()
