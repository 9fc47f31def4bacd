"""`oaml demo`: the whole job on the embedded default, one summary: data, teacher, outliers,
a cross-entropy start, the OAML student fine-tuned from it, evaluation, ONNX export.

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
from oaml.evaluation.evaluate import save_scores
from oaml.evaluation.report import markdown_table, plot_evaluation
from oaml.export.onnx import export_onnx
from oaml.io import atomic_write_json, atomic_write_text
from oaml.recipe import evaluate_student, finetune_overrides, shared_inputs, trained


def run_demo(
    out: str | Path,
    data_root: str | Path | None = None,
    preset_name: str = "quick",
    overrides: list[str] | None = None,
    device: str = "auto",
    method: str = "oaml",
) -> dict[str, Any]:
    """Data, teacher, outliers, a CE start, the `method` student fine-tuned from it, evaluation
    and export; write `out/summary.json`. Finished steps are reused when run again."""
    started = time.perf_counter()
    out = Path(out).resolve()
    overrides = list(overrides or [])
    preset = load_preset(preset_name, overrides)
    root = Path(data_root or preset.data_root or out / "data").resolve()
    bench = get_benchmark(preset.benchmark)
    print(f"[1/6] data: {preset.benchmark} under {root}")
    if bench.preparable:
        prepare(preset.benchmark, root)
    else:
        bench.require(root)
    print("[2/6] shared inputs: teacher and outliers (as the method needs)")
    extra = shared_inputs(preset, {method}, root, out, device)
    print(f"[3/6] student: cross-entropy start ({preset.student.model.arch})")
    start = trained(preset, "student", root, out / "start", device, "ce")
    checkpoint = start
    if method != "ce":
        print(f"[4/6] student: {method}, fine-tuned from the start")
        tuned = load_preset(
            preset_name, [*overrides, *extra, *finetune_overrides(preset, method, start)]
        )
        checkpoint = trained(tuned, "student", root, out / method, device, method)
    else:
        print("[4/6] student: the cross-entropy start (--method ce)")
    print("[5/6] evaluate")
    evaluation = evaluate_student(preset, checkpoint, root, device)
    eval_dir = out / "evaluation"
    atomic_write_json(eval_dir / "metrics.json", evaluation.metrics)
    atomic_write_text(eval_dir / "metrics.md", markdown_table(evaluation.metrics))
    save_scores(evaluation, eval_dir / "scores")
    plot_evaluation(
        evaluation.confidences, evaluation.groups, evaluation.metrics["score"], eval_dir
    )
    print("[6/6] export the detector (ONNX, energy inside, parity-checked)")
    exported = export_onnx(checkpoint, out / "detector.onnx", data_root=root)
    summary = {
        "tracking_uri": None,
        "registered_model": None,
        "version": None,
        "alias": None,
        "checkpoint": str(checkpoint),
        "onnx": str(exported.path),
        "data_root": str(root),
        "preset": preset.name,
        "method": method,
        "start_checkpoint": str(start),
        "metrics": evaluation.metrics,
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(out / "summary.json", summary)
    print(markdown_table(evaluation.metrics))
    print(json.dumps({k: summary[k] for k in ("checkpoint", "onnx", "data_root", "seconds")}))
    return summary
