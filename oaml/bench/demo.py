"""`oaml bench demo`: `oaml demo` as a new user runs it (its own data folder, its own MLflow
store), at this checkout and at a baseline revision, one after the other in one run; each
stage's seconds side by side, and the student against its cross-entropy start.

A variant whose folder already holds a summary is read, not run again (a killed benchmark
resumes with the variants it has not finished), so run it into a new folder to measure anew.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from oaml.bench.report import write_results
from oaml.bench.stamp import source_tree
from oaml.evaluation.review import REFERENCES
from oaml.evaluation.review import START_REFERENCE as START

# The pipeline's stages in the order they run; the rest of the wall time is orchestration.
STAGES = ("data", "outliers", "start", "teacher", "student", "evaluate", "export", "register")


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """ID accuracy, near and far AUROC of an evaluation, under its score."""
    return {
        "score": metrics["score"],
        "id_accuracy": metrics["id"]["accuracy"],
        "near_auroc": (metrics.get("near") or {}).get("auroc"),
        "far_auroc": (metrics.get("far") or {}).get("auroc"),
    }


def run_variant(
    label: str, folder: Path, tree: Path | None, overrides: list[str], device: str
) -> dict[str, Any]:
    """`oaml demo` into `folder` (oaml's code from `tree` where given, else this checkout),
    unless it finished there before; its stage seconds and headline metrics."""
    summary_file = folder / "summary.json"
    if not summary_file.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        store = folder / "mlflow" / "mlflow.db"
        store.parent.mkdir(exist_ok=True)
        sets = [arg for override in overrides for arg in ("--set", override)]
        command = [sys.executable, "-m", "oaml.cli", "demo", "--out", str(folder),
                   "--tracking-uri", f"sqlite:///{store}", "--device", device, *sets]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        if tree is not None:
            env["PYTHONPATH"] = str(tree)  # before the editable install of this checkout
        print(f"{label}: oaml demo into {folder} (log: {folder}.log)", flush=True)
        with open(f"{folder}.log", "w") as log:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tree)
        if done.returncode:
            raise RuntimeError(f"{label}: oaml demo failed ({done.returncode}); see {folder}.log")
    summary = json.loads(summary_file.read_text())
    references = folder / "evaluation" / REFERENCES  # the demo's copy of its evaluation
    found = json.loads(references.read_text()) if references.is_file() else {}
    start = (found.get(START) or {}).get("metrics")
    return {
        "label": label,
        "seconds": summary["seconds"],
        "stage_seconds": summary["stage_seconds"],
        "orchestration_seconds": summary["orchestration_seconds"],
        "student": headline(summary["metrics"]),
        "start": headline(start) if start else None,
    }


def bench_demo(
    out: str | Path,
    baseline: str | None = None,
    overrides: list[str] | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """The baseline revision's demo (where given), then this checkout's, into `out`;
    demo.json and demo.md."""
    out = Path(out).resolve()
    overrides = list(overrides or [])
    variants = []
    if baseline:
        tree = source_tree(baseline, out)
        variants.append(run_variant(baseline, out / "baseline", tree, overrides, device))
    variants.append(run_variant("this checkout", out / "current", None, overrides, device))
    result = {"baseline": baseline, "overrides": overrides, "variants": variants}
    return write_results(out, "demo.json", result)


def _cell(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def _stage_rows(variants: list[dict[str, Any]]) -> list[str]:
    ratio = len(variants) == 2
    head = "| stage | " + " | ".join(f"{v['label']} (s)" for v in variants)
    rows = [head + (" | ratio |" if ratio else " |")]
    rows.append("|---" * (len(variants) + 1 + ratio) + "|")
    names = [*STAGES, *sorted({s for v in variants for s in v["stage_seconds"]} - set(STAGES))]
    lines = [(name, [v["stage_seconds"].get(name) for v in variants]) for name in names]
    lines.append(("orchestration", [v["orchestration_seconds"] for v in variants]))
    lines.append(("**`oaml demo`**", [v["seconds"] for v in variants]))
    for name, values in lines:
        if all(value is None for value in values):
            continue
        cells = [_cell(value) for value in values]
        if ratio:
            before, after = values
            cells.append(f"{after / before:.2f}x" if before and after is not None else "n/a")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def _quality_rows(variants: list[dict[str, Any]]) -> list[str]:
    rows = ["| model | score | ID accuracy | near AUROC | far AUROC |", "|---|---|---|---|---|"]
    for variant in variants:
        for role in ("student", "start"):
            found = variant[role]
            if found is None:
                continue
            name = f"{variant['label']}: {'OAML student' if role == 'student' else START}"
            cells = [found["id_accuracy"], found["near_auroc"], found["far_auroc"]]
            values = " | ".join(_cell(value, 100, 2) for value in cells)
            rows.append(f"| {name} | {found['score']} | {values} |")
    return rows


def markdown(result: dict[str, Any]) -> str:
    """Each stage's seconds per variant (and their ratio), then each variant's student beside
    its cross-entropy start (percent)."""
    variants = result["variants"]
    sets = ", ".join(f"`{o}`" for o in result.get("overrides") or []) or "none"
    lines = [*_stage_rows(variants), "", *_quality_rows(variants), ""]
    lines.append(f"Preset overrides: {sets}. Each variant prepared its own data and store.")
    return "\n".join(lines) + "\n"
