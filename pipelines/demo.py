"""`oaml demo`: the whole pipeline on the embedded default, one summary.

It is `oaml pipeline run --local`: the Kubeflow pipeline run by kfp.local (data, outliers,
teacher, cross-entropy start, OAML student, evaluation, ONNX export, registration with alias
challenger), tracked in MLflow (MLFLOW_TRACKING_URI, else the embedded sqlite store), then
`OUT/summary.json` in ACCEPTANCE.md's shape, with the newest student, detector and evaluation
copied to OUT/checkpoint.pt, OUT/detector.onnx and OUT/evaluation/.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from oaml.io import atomic_copy, atomic_write_json


def run_demo(
    out: str | Path,
    data_root: str | Path | None = None,
    preset_name: str = "quick",
    overrides: list[str] | None = None,
    device: str = "auto",
    method: str = "oaml",
    tracking_uri: str | None = None,
    registered_model: str = "oaml-detector",
    runner: str = "subprocess",
    image: str | None = None,
    work_dir: str | Path | None = None,
    reproducible: bool = False,
    import_from: str = "",
    import_options: str = "{}",
) -> dict[str, Any]:
    """Run the local pipeline into `out` and write `out/summary.json`. A re-run reuses the
    finished stages (`work_dir`, default OUT/work) and registers a new version.
    `runner="docker"` runs every stage in the project image `image` (pipelines/containers.py).
    `reproducible`: the stages run pinned (oaml.reproducible), so the numbers do not depend on
    the machine's cores or CPU model. `import_from`: a folder of class subfolders, a CSV or an
    S3 prefix the data step imports as the preset's benchmark (`--set benchmark=NAME`), with
    `import_options` (JSON: `oaml data import`'s options)."""
    from contextlib import nullcontext

    from oaml.config import load_preset
    from oaml.evaluation.report import markdown_table
    from oaml.reproducible import PINNED_OVERRIDES, pinned_environment
    from pipelines.runner import run_local

    started = time.perf_counter()
    out = Path(out).expanduser().resolve()
    overrides = list(overrides or []) + (list(PINNED_OVERRIDES) if reproducible else [])
    preset = load_preset(preset_name, overrides)  # a bad preset fails before any stage starts
    params = {
        "preset": preset_name,
        "benchmark": preset.benchmark,
        "overrides": json.dumps(overrides),
        "method": method,
        "device": device,
        "registered_model": registered_model,
    }
    if data_root or preset.data_root:
        params["data_root"] = str(Path(data_root or preset.data_root).expanduser().resolve())
    if import_from:
        params["import_from"] = import_from
        params["import_options"] = import_options
    if work_dir:
        params["work_dir"] = str(Path(work_dir).expanduser().resolve())
    if reproducible and runner != "subprocess":
        raise ValueError("--reproducible pins the stages' environment: use the subprocess runner")
    with pinned_environment() if reproducible else nullcontext():
        result = run_local(out, params, tracking_uri, runner=runner, image=image)
    # Stable paths for the newest run's results (the artifacts stay under OUT/pipeline_root).
    checkpoint = atomic_copy(result["checkpoint"], out / "checkpoint.pt")
    onnx = atomic_copy(result["onnx"], out / "detector.onnx")
    evaluation = atomic_copy(result["evaluation"], out / "evaluation")
    metrics = json.loads((evaluation / "metrics.json").read_text())
    summary = {
        "tracking_uri": result["tracking_uri"],
        "registered_model": result["registered_model"],
        "version": result["version"],
        "alias": result["alias"],
        "model_uri": result["model_uri"],
        "checkpoint": str(checkpoint),
        "onnx": str(onnx),
        "data_root": result["data_root"],
        "preset": preset.name,
        "method": method,
        "mlflow_parent_run_id": result["parent_run_id"],
        "runner": runner,
        "reproducible": reproducible,
        "image": result.get("image"),
        "kfp_run_dir": result["run_dir"],
        "metrics": metrics,
        "seconds": round(time.perf_counter() - started, 1),
        "pipeline_seconds": result["seconds"],
        "stage_seconds": result["stage_seconds"],
        "orchestration_seconds": result["orchestration_seconds"],
    }
    atomic_write_json(out / "summary.json", summary)
    print(markdown_table(metrics))
    keys = ("registered_model", "version", "alias", "onnx", "seconds", "orchestration_seconds")
    print(json.dumps({k: summary[k] for k in keys}))
    return summary
