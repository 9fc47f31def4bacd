"""`oaml bench scores`: what each servable score costs the exported detector.

The checkpoint is exported once per score (the energy, ebo, is the baseline); each detector then
runs the same batches through onnxruntime, interleaved round by round so that a machine whose
speed drifts affects every score alike. Reported: images/s, its ratio to ebo, and file size
(knn carries its bank of ID training features in the graph).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from oaml.bench.report import write_results
from oaml.bench.serve import time_calls
from oaml.contract import SERVABLE_SCORES


def bench_scores(
    checkpoint: str | Path,
    out: str | Path,
    data_root: str | Path | None = None,
    scores: tuple[str, ...] = SERVABLE_SCORES,
    batch: int = 32,
    seconds: float = 5.0,
    rounds: int = 2,
    knn_k: int = 50,
    fit_images: int | None = None,
) -> dict[str, Any]:
    """Export, then time every score's detector side by side; write scores.json and scores.md."""
    from oaml.export.onnx import export_onnx
    from oaml.serving.detector import Detector

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = ("ebo", *[s for s in scores if s != "ebo"])
    detectors = {}
    for name in names:
        path = out / f"detector-{name}.onnx"
        export_onnx(checkpoint, path, data_root, score=name, knn_k=knn_k, fit_images=fit_images)
        detectors[name] = Detector(path)
    info = detectors["ebo"].info
    images = np.random.default_rng(0).integers(
        0, 256, (batch, info.input_size, info.input_size, info.channels), dtype=np.uint8
    )
    rates: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name, detector in detectors.items():
            timed = time_calls(lambda d=detector: d.run(images), batch, seconds)
            rates[name].append(timed["images_per_second"])
    rows = []
    for name in names:
        rate = float(np.median(rates[name]))
        rows.append({
            "score": name,
            "images_per_second": rate,
            "ratio_to_ebo": rate / float(np.median(rates["ebo"])),
            "megabytes": (out / f"detector-{name}.onnx").stat().st_size / 1e6,
            "settings": detectors[name].info.metadata.get("ood_score_settings"),
        })  # fmt: skip
    result = {"checkpoint": str(checkpoint), "batch": batch, "rounds": rounds, "rows": rows}
    return write_results(out, "scores.json", result)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"onnxruntime, batch {result['batch']}, median of {result['rounds']} interleaved rounds",
        "",
        "| score | images/s | ratio to ebo | file MB | settings |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['score']} | {row['images_per_second']:.0f} | {row['ratio_to_ebo']:.2f} | "
            f"{row['megabytes']:.1f} | {row['settings'] or ''} |"
        )
    return "\n".join(lines) + "\n"
