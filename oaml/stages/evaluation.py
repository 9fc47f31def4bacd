"""The evaluation stage: the student's metrics on the benchmark, with the report that sets it
beside the cross-entropy start and the registered champion."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oaml.config import Preset, load_preset
from oaml.stages import _checkpoint_in, _log_data, data_root_of
from oaml.tracking.runs import Tracking, stage_run


@dataclass(frozen=True)
class EvaluationResult:
    metrics: dict[str, Any]
    roc: dict[str, list[float]]  # ID vs all OOD sets: fpr, tpr, threshold (for Kubeflow's UI)
    plots: list[Path]  # the PNGs
    report: Path  # report.html


@dataclass(frozen=True)
class Compared:
    """What the evaluation's report sets this model beside: the cross-entropy start it was
    fine-tuned from, the registered champion, and the outliers it trained on."""

    baseline: str | Path | None = None
    registered_model: str | None = None
    outliers: str | Path | None = None


def evaluate_detector(
    preset_name: str,
    overrides: list[str],
    data: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    tracking: Tracking,
    device: str = "auto",
    compared: Compared = Compared(),
) -> EvaluationResult:
    """ID accuracy and OOD metrics on the benchmark; metrics.json, metrics.md, scores, plots
    and report.html into `out`, all logged to the stage's run."""
    from oaml.evaluation.metrics import roc_points
    from oaml.evaluation.review import publish_evaluation
    from oaml.recipe import evaluate_student

    preset = load_preset(preset_name, overrides)
    root, out = data_root_of(data), Path(out)
    ckpt = _checkpoint_in(checkpoint)
    with stage_run(tracking, "evaluate") as run:
        run.params(
            {"checkpoint": str(ckpt), "score": preset.evaluation.score,
             "temperature": preset.evaluation.temperature}
        )  # fmt: skip
        _log_data(run, preset.benchmark, root, "evaluation")
        evaluation = evaluate_student(preset, ckpt, root, device)
        metrics = evaluation.metrics
        references = _references(preset, root, device, tracking, compared)
        shown = publish_evaluation(evaluation, out, references, compared.outliers)
        run.metrics({k: metrics[k] for k in ("id", "near", "far", "ood") if metrics.get(k)})
        run.artifact(out / "metrics.json", "evaluation")
        run.artifact(out / "metrics.md", "evaluation")
        for path in shown:
            run.artifact(path, "plots" if path.suffix == ".png" else "evaluation")
    return EvaluationResult(metrics, roc_points(evaluation.confidences), shown[:-1], shown[-1])


def _references(preset: Preset, root: Path, device: str, tracking: Tracking, compared: Compared):
    """The report's references: the CE start (evaluated here, same score) and the champion."""
    from oaml.evaluation.html_report import Reference
    from oaml.evaluation.review import START_REFERENCE
    from oaml.recipe import evaluate_student
    from oaml.tracking.registry import champion_metrics

    found = []
    if compared.baseline:
        start = evaluate_student(preset, _checkpoint_in(compared.baseline), root, device)
        found.append(Reference(START_REFERENCE, start.metrics, "the model it fine-tuned"))
    if compared.registered_model:
        metrics, note = champion_metrics(
            compared.registered_model, preset.benchmark, preset.evaluation.score,
            tracking.tracking_uri,
        )  # fmt: skip
        found.append(Reference("champion", metrics, note))
    return found
