"""`parking-gateway lpr ...`: read plates from photos, and measure the reader on a labelled set.

Both commands run the reader in its worker process, exactly as a lane does, so the figures
(latency, the worker's peak memory) are the lane's. An image that cannot be read (empty,
truncated, too small or too large, not an image, or the reader gave up on it) is reported once,
on stderr with the reason, and never stops the others.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np
import numpy.typing as npt

from gateway.cli.common import (
    EXIT_CODES,
    InvalidInput,
    OperationalError,
    Section,
    json_option,
    print_json,
    print_sections,
    terminal,
)
from gateway.core.plates import formats_for
from gateway.drivers.image import BadImage, check_image, decode_image, read_image_file
from gateway.lpr.consensus import DEFAULT_CHAR_THRESHOLD, DEFAULT_THRESHOLD, vote
from gateway.lpr.recognize import DEFAULT_NETWORKS, DEFAULT_WEIGHTS
from gateway.lpr.worker import (
    DEFAULT_FACTORY,
    DEFAULT_OPTIONS,
    ImageReading,
    LazyOptions,
    PlateWorker,
    WorkerStartError,
)

PROGRESS_EVERY = 25  # images between progress lines when stderr is not a terminal

FC = TypeVar("FC", bound=Callable[..., Any])

factory_option: Callable[[FC], FC] = click.option(
    "--factory", default=DEFAULT_FACTORY, show_default=True, metavar="MODULE:CALLABLE",
    help="The reader the worker builds: another engine, or a test double.",
)


def reader_options(command: FC) -> FC:
    """--localizer, --engine, --networks and --weights: the reader as `[lpr]` configures it."""
    for option in reversed([
        click.option("--localizer", type=click.Choice(["detector", "glyphs", "detector+glyphs"]),
                     default="detector", show_default=True,
                     help="Where plate candidates come from, as lpr.localizer."),
        click.option("--engine", type=click.Choice(["onnx", "easyocr"]), default="onnx",
                     show_default=True, help="The recognition engine, as lpr.engine."),
        click.option("--networks", default=DEFAULT_NETWORKS, show_default=True,
                     metavar="ppocr|plate|PATH[+...]",
                     help="The onnx engine's networks, as lpr.recognizer_networks; several"
                     " joined with + make an ensemble."),
        click.option("--weights", default=DEFAULT_WEIGHTS, show_default=True,
                     metavar="plate|english_g2|PATH[+...]",
                     help="The easyocr engine's weights, as lpr.recognizer_weights."),
    ]):
        command = option(command)
    return command


char_threshold_option: Callable[[FC], FC] = click.option(
    "--char-threshold", type=click.FloatRange(0.0, 1.0), default=DEFAULT_CHAR_THRESHOLD,
    show_default=True, help="Confidence each character of a plate needs for it to be taken,"
    " as lpr.min_char_confidence.",
)
timeout_option: Callable[[FC], FC] = click.option(
    "--timeout", "timeout_s", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
    help="Seconds one image may take before it is given up.",
)


def _lpr() -> None:
    """Licence-plate reading: read photos, evaluate the reader."""


# Annotated, not decorated: gateway.cli imports this module at its end, and mypy needs the
# group's type before it has seen the decorator's.
lpr: click.Group = click.group("lpr")(_lpr)


# --- read --------------------------------------------------------------------------------


@lpr.command("read", epilog=EXIT_CODES)
@click.argument("images", nargs=-1, required=True,
                type=click.Path(path_type=Path, dir_okay=False, exists=True))
@factory_option
@reader_options
@timeout_option
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=DEFAULT_THRESHOLD,
              show_default=True, help="Confidence a plate needs to be taken.")
@char_threshold_option
@json_option
def lpr_read(images: tuple[Path, ...], factory: str, localizer: str, engine: str,
             networks: str, weights: str, timeout_s: float,
             threshold: float, char_threshold: float, as_json: bool) -> None:
    """Read the plate in each IMAGE (JPEG or PNG, one vehicle each).

    --json prints a list with, per image, the plate (null below the threshold), the guess,
    confidence, box, timings and every candidate; an unreadable image has "error" instead.
    Exit code 2 if any image could not be read.
    """
    decoded: list[tuple[Path, npt.NDArray[np.uint8] | str]] = []
    for path in images:
        try:
            decoded.append((path, decode_image(read_image_file(path))))
        except BadImage as e:
            decoded.append((path, str(e)))
        except OSError as e:
            decoded.append((path, f"cannot read the file: {e.strerror or e}"))
    good = [image for _, image in decoded if not isinstance(image, str)]
    readings = _run_worker(factory, timeout_s, lambda worker: _read_all(worker, good, timeout_s),
                           reader=_reader(localizer, engine, networks, weights)) if good else []
    rows: list[dict[str, Any]] = []
    it = iter(readings)
    for path, image in decoded:
        if isinstance(image, str):
            rows.append({"image": str(path), "error": image})
        else:
            rows.append({"image": str(path), **_describe(next(it), threshold, char_threshold)})
    failed = [row for row in rows if "error" in row]
    for row in failed:  # once each, here: the table lists the images that were read
        click.echo(f"{row['image']}: {row['error']}", err=True)
    if as_json:
        print_json(rows)
    elif len(failed) < len(rows):
        print_sections([_read_section([row for row in rows if "error" not in row])])
    if failed:
        raise InvalidInput(f"{len(failed)} of {len(rows)} images could not be read")


async def _read_all(worker: PlateWorker, images: Sequence[npt.NDArray[np.uint8]],
                    timeout_s: float) -> list[ImageReading | str]:
    out: list[ImageReading | str] = []
    for image in images:
        try:
            out.append(await worker.read_image(image, timeout_s))
        except (TimeoutError, RuntimeError, BadImage) as e:
            out.append(str(e))
    return out


def _describe(reading: ImageReading | str, threshold: float,
              char_threshold: float) -> dict[str, Any]:
    if isinstance(reading, str):
        return {"error": reading}
    result = vote(reading.candidates, threshold=threshold, char_threshold=char_threshold)
    return {
        "plate": result.plate,
        "guess": result.guess,
        "confidence": result.confidence,
        "reason": result.reason,
        "box": list(result.box) if result.box else None,
        "timings_ms": {k: round(v, 1) for k, v in reading.timings_ms.items()},
        "candidates": [{"text": c.text, "confidence": round(c.confidence, 4),
                        "box": list(c.box)} for c in reading.candidates],
    }


def _read_section(rows: Sequence[dict[str, Any]]) -> Section:
    table = []
    for row in rows:
        ms = row["timings_ms"].get("roundtrip")
        note = row["reason"] or ""
        if row["plate"] is None and row["guess"]:
            note = f"{note}: guess {row['guess']}"
        table.append((row["image"], row["plate"] or "-", f"{row['confidence']:.2f}",
                      "-" if ms is None else f"{ms:.0f}", note))
    return Section("plates", table, header=("image", "plate", "conf", "ms", "note"), wrap=0)


# --- eval --------------------------------------------------------------------------------


@lpr.command("eval", epilog=EXIT_CODES)
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
@factory_option
@reader_options
@timeout_option
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N photos of a folder.")
@click.option("--formats", "formats_text", default="",
              help="The lot's plate formats, in order, as lpr.formats takes them, comma "
                   "separated (e.g. 'br' or 'eu,uk'); default: every shipped format.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=DEFAULT_THRESHOLD,
              show_default=True, help="Confidence a plate needs to be taken, as the lane's.")
@char_threshold_option
@click.option("--misses", "misses_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Write each miss here: NAME.json (label, read, plate taken, confidences,"
                   " box) and NAME.png (the best candidate's crop).")
@json_option
def lpr_eval(directory: Path, factory: str, localizer: str, engine: str, networks: str,
             weights: str, timeout_s: float, limit: int | None,
             formats_text: str, threshold: float, char_threshold: float,
             misses_dir: Path | None, as_json: bool) -> None:
    """Measure the reader on DIRECTORY in the openalpr layout (NAME.jpg + NAME.txt).

    A DIRECTORY with labels of its own is one set, and --json prints its figures:
    {"images", "exact", "accuracy", "within_one_confusable", "localized", "p50_ms", "p95_ms",
    "worker_peak_rss_mb", "accepted", "accepted_right", "confident_wrong",
    "confident_wrong_count", "per_char_errors", "threshold", "char_threshold"}. accuracy and
    the like score the reader's best read; accepted is the share of photos where the lane's
    vote (at --threshold and --char-threshold, with --formats) takes a plate, accepted_right
    where that plate is right, confident_wrong (a share; confident_wrong_count, a number)
    where it is wrong: a wrong plate taken without asking anybody. per_char_errors lists the
    most frequent character errors of the wrong reads: [{"truth": "M", "read": "H",
    "count": 4}, ...], "read": "" for a dropped character, "truth": "" for an added one.

    A DIRECTORY without labels but with labelled sub-folders (eu/, br/) is several sets: each
    is measured on its own, and --json prints {"eu": {...}, "br": {...}}. The reader runs
    warm in its worker process; latency is per photo, from the file's bytes to the final
    read, the worker's round trip included. --misses DIR writes, for each photo whose best
    read is wrong, NAME.json and NAME.png (the crop, when there is one) into DIR (DIR/eu/,
    DIR/br/ for several sets).
    """
    from gateway.lpr import evaluate as evaluation

    sets = _label_sets(directory)
    if not sets:
        raise InvalidInput(f"{directory} holds no labelled photos (NAME.jpg + NAME.txt), nor"
                           " sub-folders that do")
    entries = _formats(formats_text)
    # The lane votes with the formats it reads towards, so the eval's vote does too.
    vote_formats = formats_for(entries) if entries else ()

    async def run(worker: PlateWorker) -> dict[str, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        figures = {}
        for name, folder in sets:
            total = min(len(evaluation.load_samples(folder)), limit or sys.maxsize)
            reader = _WorkerReader(worker, loop, timeout_s)
            progress = _progress(name, total)
            # evaluate() is synchronous; it runs in a thread while the loop serves the worker.
            misses = misses_dir / name if misses_dir is not None and name else misses_dir
            found = await asyncio.to_thread(evaluation.evaluate, folder, reader,
                                            progress=progress, limit=limit,
                                            threshold=threshold, formats=vote_formats,
                                            misses=misses, char_threshold=char_threshold)
            if total >= PROGRESS_EVERY or terminal(sys.stderr):
                click.echo(err=True)
            found["worker_peak_rss_mb"] = worker.stats().peak_rss_mb
            figures[name] = found
        return figures

    try:
        figures = _run_worker(factory, timeout_s, run, entries,
                              reader=_reader(localizer, engine, networks, weights))
    except evaluation.LabelError as e:
        raise InvalidInput(str(e)) from None
    result: dict[str, Any] = figures[""] if list(figures) == [""] else figures
    if as_json:
        print_json(result)
        return
    print_sections([
        Section(f"lpr eval {directory / name if name else directory}",
                [(key, _figure_text(value)) for key, value in found.items()], right_last=True)
        for name, found in figures.items()
    ])


def _figure_text(value: Any) -> str:
    """A figure for the table; per_char_errors as "M>H 4, 1>- 2" ("-" for no character)."""
    if isinstance(value, list):
        return ", ".join(f"{e['truth'] or '-'}>{e['read'] or '-'} {e['count']}"
                         for e in value) or "-"
    return str(value)


def _formats(text: str) -> tuple[str, ...]:
    entries = tuple(e.strip() for e in text.split(",") if e.strip())
    try:
        formats_for(entries)
    except ValueError as e:
        raise InvalidInput(f"--formats: {e}") from None
    return entries


def _label_sets(directory: Path) -> list[tuple[str, Path]]:
    """("", DIRECTORY) if it holds labels, else (name, sub-folder) for each that does."""
    if any(directory.glob("*.txt")):
        return [("", directory)]
    return [(sub.name, sub) for sub in sorted(directory.iterdir())
            if sub.is_dir() and any(sub.glob("*.txt"))]


def _progress(name: str, total: int) -> Callable[[Any], None]:
    done = 0
    label = f"{name}: " if name else ""
    on_terminal = terminal(sys.stderr)

    def step(_result: Any) -> None:
        nonlocal done
        done += 1
        if on_terminal:
            click.echo(f"\r{label}{done}/{total} photos", err=True, nl=False)
        elif done % PROGRESS_EVERY == 0:
            click.echo(f"{label}{done}/{total} photos", err=True)

    return step


class _WorkerReader:
    """A synchronous `read(image)` for evaluate(), served by the worker on the event loop."""

    def __init__(self, worker: PlateWorker, loop: asyncio.AbstractEventLoop,
                 timeout_s: float) -> None:
        self._worker = worker
        self._loop = loop
        self._timeout_s = timeout_s

    def read(self, image: npt.NDArray[np.uint8]) -> ImageReading:
        try:
            check_image(image)
        except BadImage as e:
            return ImageReading((), {}, str(e))
        future: Future[ImageReading] = asyncio.run_coroutine_threadsafe(
            self._worker.read_image(image, self._timeout_s), self._loop)
        try:
            return future.result()
        except (TimeoutError, RuntimeError) as e:
            return ImageReading((), {}, str(e))


# --- the worker ----------------------------------------------------------------------------


def _reader(localizer: str, engine: str, networks: str, weights: str) -> dict[str, str]:
    """ReaderOptions fields from the reader options of a command."""
    return {"localizer": localizer, "engine": engine, "networks": networks, "weights": weights}


def _run_worker(factory: str, timeout_s: float, use: Callable[[PlateWorker], Any],
                formats: tuple[str, ...] = (), *, reader: dict[str, str] | None = None) -> Any:
    """Start a worker, warm it up, hand it to `use`, and always stop it.

    `formats` (region codes or NAME=MASK entries, as `lpr.formats` takes) are the plate
    formats reads are corrected towards, in order; empty: every shipped format. `reader`
    holds the default reader's localizer, engine, networks and weights (see `_reader`).
    """

    root = click.get_current_context().find_root()
    log_level = str(root.params.get("log_level", "warning"))
    options = None
    if factory == DEFAULT_FACTORY:
        chosen_options: dict[str, Any] = dict(reader or {})
        if formats:
            chosen_options["formats"] = formats
        options = LazyOptions(DEFAULT_OPTIONS, chosen_options)

    async def main() -> Any:
        chosen = formats_for(formats) if formats else ()
        worker = PlateWorker(factory, options, queue_size=4, timeout_s=timeout_s,
                             log_level=log_level, formats=chosen)
        click.echo("starting the plate reader...", err=True)
        warmup = await worker.start()
        click.echo(f"plate reader warm in {warmup:.1f} s", err=True)
        try:
            return await use(worker)
        finally:
            await worker.close()

    try:
        return asyncio.run(main())
    except WorkerStartError as e:
        raise OperationalError(str(e)) from None
