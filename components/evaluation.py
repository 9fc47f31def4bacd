"""Evaluation: ID accuracy and OOD detection, shown in the Kubeflow UI (metrics, ROC, plots)."""

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components import component


@component
def evaluate(
    preset: str,
    overrides: str,
    data: Input[Dataset],
    student: Input[Model],
    tracking_uri: str,
    parent_run_id: str,
    kfp_run_id: str,
    device: str,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
    report: Output[HTML],
):
    """Score the benchmark's ID test set and every OOD set with the energy score."""
    import json

    from oaml.evaluation.report import html_report, scalar_metrics
    from oaml.stages import evaluate_detector
    from oaml.tracking.runs import Tracking

    tracking = Tracking.resolve(tracking_uri, parent_run_id, kfp_run_id)
    result = evaluate_detector(
        preset, json.loads(overrides), data.path, student.path, evaluation.path, tracking, device
    )
    for name, value in scalar_metrics(result.metrics).items():
        metrics.log_metric(name, value)
    roc.log_roc_curve(result.roc["fpr"], result.roc["tpr"], result.roc["threshold"])
    with open(report.path, "w") as fh:
        fh.write(html_report(result.metrics, result.plots))
