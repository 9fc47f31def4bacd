"""`oaml demo`: the whole job on the embedded default (prepare, train, evaluate, export), one
summary.

For now it runs in-process; the pipeline issue turns it into the local Kubeflow run and fills the
tracking and registry fields of summary.json, which stay null until then.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from oaml.config import load_preset
from oaml.data.benchmarks import get_benchmark
from oaml.data.prepare import prepare
from oaml.evaluation.evaluate import evaluate, save_scores
from oaml.evaluation.report import markdown_table, plot_evaluation
from oaml.export.onnx import export_onnx
from oaml.io import atomic_write_json, atomic_write_text
from oaml.training.stage import train_stage


def run_demo(
    out: str | Path,
    data_root: str | Path | None = None,
    preset_name: str = "quick",
    overrides: list[str] | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Prepare the data, train the preset's student, evaluate it; write `out/summary.json`."""
    started = time.perf_counter()
    out = Path(out).resolve()
    preset = load_preset(preset_name, overrides)
    root = Path(data_root or preset.data_root or out / "data").resolve()
    bench = get_benchmark(preset.benchmark)
    print(f"[1/4] data: {preset.benchmark} under {root}")
    if bench.preparable:
        prepare(preset.benchmark, root)
    else:
        bench.require(root)
    print(f"[2/4] train: {preset.student.train.method} student ({preset.student.model.arch})")
    result = train_stage(preset, "student", root, out / "student", device=device)
    print("[3/4] evaluate")
    evaluation = evaluate(
        result.checkpoint,
        preset.benchmark,
        root,
        score=preset.evaluation.score,
        temperature=preset.evaluation.temperature,
        batch_size=preset.evaluation.batch_size,
        device=device,
    )
    eval_dir = out / "evaluation"
    atomic_write_json(eval_dir / "metrics.json", evaluation.metrics)
    atomic_write_text(eval_dir / "metrics.md", markdown_table(evaluation.metrics))
    save_scores(evaluation, eval_dir / "scores")
    plot_evaluation(
        evaluation.confidences, evaluation.groups, evaluation.metrics["score"], eval_dir
    )
    print("[4/4] export the detector (ONNX, energy inside, parity-checked)")
    exported = export_onnx(result.checkpoint, out / "detector.onnx", data_root=root)
    summary = {
        "tracking_uri": None,
        "registered_model": None,
        "version": None,
        "alias": None,
        "checkpoint": str(result.checkpoint),
        "onnx": str(exported.path),
        "data_root": str(root),
        "preset": preset.name,
        "metrics": evaluation.metrics,
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(out / "summary.json", summary)
    print(markdown_table(evaluation.metrics))
    print(json.dumps({k: summary[k] for k in ("checkpoint", "data_root", "seconds")}))
    return summary
