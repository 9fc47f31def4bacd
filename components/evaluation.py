"""Evaluation: ID accuracy and OOD detection, shown in the Kubeflow UI (metrics, ROC, report)."""

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components import component


@component
def evaluate(
    preset: str,
    overrides: str,
    data: Input[Dataset],
    student: Input[Model],
    start: Input[Model],
    outliers: Input[Dataset],
    registered_model: str,
    tracking_uri: str,
    parent_run_id: str,
    kfp_run_id: str,
    device: str,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
    report: Output[HTML],
):
    """Score the benchmark's ID test set and every OOD set with the preset's score; the report
    sets the student beside its cross-entropy `start` and the registered champion."""
    import json
    import shutil

    from oaml.evaluation.report import scalar_metrics
    from oaml.stages.evaluation import Compared, evaluate_detector
    from oaml.tracking.runs import Tracking

    tracking = Tracking.resolve(tracking_uri, parent_run_id, kfp_run_id)
    compared = Compared(start.path, registered_model, outliers.path)
    result = evaluate_detector(
        preset, json.loads(overrides), data.path, student.path, evaluation.path, tracking, device,
        compared,
    )  # fmt: skip
    for name, value in scalar_metrics(result.metrics).items():
        metrics.log_metric(name, value)
    roc.log_roc_curve(result.roc["fpr"], result.roc["tpr"], result.roc["threshold"])
    shutil.copyfile(result.report, report.path)
