"""`oaml demo` end to end: the local Kubeflow pipeline writes the summary ACCEPTANCE.md describes,
tracked in the embedded MLflow store, the detector registered with alias challenger."""

import json
from pathlib import Path

import mlflow
import pytest

from oaml.models.checkpoint import read_checkpoint
from tests.conftest import TINY_RECIPE, run_oaml

pytestmark = pytest.mark.slow


def test_demo_runs_the_local_pipeline(demo_run, data_root):
    summary, out = demo_run.summary, demo_run.out
    # Every ACCEPTANCE field is filled; the embedded store lives under the working folder.
    store = demo_run.cwd / "runs" / "mlflow" / "mlflow.db"
    assert summary["tracking_uri"] == f"sqlite:///{store}" and store.is_file()
    assert (summary["registered_model"], summary["version"], summary["alias"]) == (
        "oaml-detector", "1", "challenger",
    )  # fmt: skip
    # The newest results at stable paths (the artifacts stay under the run's pipeline_root).
    assert (
        summary["checkpoint"] == str(out / "checkpoint.pt")
        and Path(summary["checkpoint"]).is_file()
    )
    assert summary["onnx"] == str(out / "detector.onnx") and Path(summary["onnx"]).is_file()
    assert (out / "evaluation" / "roc_curves.png").is_file()
    assert Path(summary["data_root"]) == data_root.resolve()
    assert summary["metrics"]["benchmark"] == "fmnist" and summary["seconds"] > 0
    # The pipeline ran the recipe: the OAML student fine-tuned from a CE start with a teacher.
    lineage = read_checkpoint(summary["checkpoint"])["lineage"]
    assert lineage["method"] == "oaml" and lineage["init_checkpoint"]
    assert Path(lineage["teacher_checkpoint"]).is_file() and Path(lineage["outliers"]).is_dir()
    # Stage times come from the stage runs; the rest is orchestration.
    stages = summary["stage_seconds"]
    assert set(stages) >= {"data", "teacher", "student", "evaluate", "export", "register"}
    assert summary["orchestration_seconds"] == pytest.approx(
        summary["pipeline_seconds"] - sum(stages.values()), abs=1.0
    )
    evaluation = Path(summary["kfp_run_dir"]) / "evaluate"
    report = (evaluation / "report").read_text()
    assert "<img src='data:image/png;base64," in report
    # The report sets the student beside its CE start; the first run has no champion yet.
    assert "cross-entropy start" in report and "has no champion yet" in report
    assert "Training outliers" in report and "ID inputs flagged as OOD" in report
    # ...and writes that comparison as data (what `oaml bench demo` reads).
    start = json.loads((out / "evaluation" / "references.json").read_text())["cross-entropy start"]
    assert start["metrics"]["score"] == summary["metrics"]["score"]
    assert 0 <= start["metrics"]["far"]["auroc"] <= 1
    # Kubeflow's UI reads the ROC curve and the metrics from the executor output.
    outputs = json.loads((evaluation / "executor_output.json").read_text())["artifacts"]
    curve = outputs["roc"]["artifacts"][0]["metadata"]["confidenceMetrics"]
    assert len(curve) > 10
    assert {"falsePositiveRate", "recall", "confidenceThreshold"} <= set(curve[0])
    shown = outputs["metrics"]["artifacts"][0]["metadata"]
    assert shown["far_auroc"] == pytest.approx(summary["metrics"]["far"]["auroc"])
    # The exported detector is the evaluated model: same ID accuracy under onnxruntime.
    from oaml.evaluation.evaluate import evaluate

    onnx_metrics = evaluate(None, "fmnist", data_root, onnx=summary["onnx"]).metrics
    assert onnx_metrics["id"]["accuracy"] == pytest.approx(
        summary["metrics"]["id"]["accuracy"], abs=2e-4
    )
    # The registered version is that file.
    client = mlflow.MlflowClient(summary["tracking_uri"])
    version = client.get_model_version_by_alias("oaml-detector", "challenger")
    assert (
        version.tags["checkpoint_sha256"]
        == json.loads(read_onnx_metadata(summary["onnx"])["lineage"])["checkpoint_sha256"]
    )


def test_a_failed_stage_is_named_and_keeps_the_trained_stages(demo_run, data_root):
    """A re-run whose evaluation setting is bad: a one-line error naming the stage, its run and
    the parent run FAILED, the trained stages reused untouched (an evaluation setting does not
    invalidate them). The re-run that succeeds is tests/tracking/test_pipeline_services.py's."""
    teacher_dirs = sorted(demo_run.work.glob("teacher-*"))
    stamp = (teacher_dirs[0] / "checkpoint.pt").stat().st_mtime_ns
    failed = run_oaml(
        "demo", "--out", str(demo_run.out), "--data-root", str(data_root), *TINY_RECIPE,
        "--set", "evaluation.score=bogus", timeout=900, check=False, cwd=demo_run.cwd,
        unset=("MLFLOW_TRACKING_URI",),
    )  # fmt: skip
    assert failed.returncode == 2, failed.stderr
    assert "the local pipeline failed in stage evaluate" in failed.stderr
    assert "Traceback" not in failed.stderr.split("error:")[-1]
    assert sorted(demo_run.work.glob("teacher-*")) == teacher_dirs
    assert (teacher_dirs[0] / "checkpoint.pt").stat().st_mtime_ns == stamp
    client = mlflow.MlflowClient(demo_run.summary["tracking_uri"])
    version = client.get_model_version_by_alias("oaml-detector", "challenger")
    parents = client.search_runs(
        [version_experiment(client, version)],
        filter_string="tags.`oaml.pipeline_run` = 'true'",
        order_by=["attributes.start_time DESC"],
    )
    assert [p.info.status for p in parents[:2]] == ["FAILED", "FINISHED"]
    children = client.search_runs(
        [parents[0].info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'",
    )
    statuses = {r.data.tags["oaml.stage"]: r.info.status for r in children}
    assert statuses["evaluate"] == "FAILED" and statuses["student"] == "FINISHED"
    assert "register" not in statuses
    # The reused training stages still show the curves they were trained with.
    teacher = next(r for r in children if r.data.tags["oaml.stage"] == "teacher")
    assert teacher.data.tags["reused"] == "True" and "val_accuracy" in teacher.data.metrics


def version_experiment(client, version) -> str:
    return client.get_run(version.run_id).info.experiment_id


def read_onnx_metadata(path: str) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}


def test_data_prepare_command_verifies_a_prepared_root(data_root):
    proc = run_oaml("data", "prepare", "--benchmark", "fmnist", "--root", str(data_root))
    assert "verified" in proc.stdout
