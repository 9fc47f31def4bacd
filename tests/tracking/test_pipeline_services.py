"""The local pipeline against real services: an `mlflow server` on PostgreSQL with SeaweedFS S3
artifacts. Runs, metrics, S3 objects, the registered version, its alias and the model itself.
It re-runs the session's demo on top of its finished stages (the reuse a user gets when moving
an earlier run into a shared MLflow): the trained stages are kept and still tracked in full."""

from __future__ import annotations

import json
import os

import mlflow
import numpy as np
import pytest

from tests.conftest import TINY_RECIPE, run_oaml
from tests.tracking import services

pytestmark = pytest.mark.slow

STAGES = {"data", "outliers", "teacher", "start", "student", "evaluate", "export", "register"}


def test_local_pipeline_tracks_registers_and_promotes(
    tmp_path, data_root, demo_run, tracking_server, s3_store, monkeypatch
):
    out = tmp_path / "pipeline"
    env = {"MLFLOW_TRACKING_URI": tracking_server, **services.s3_env(s3_store)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    trained = {p: p.stat().st_mtime_ns for p in demo_run.work.glob("*/checkpoint.pt")}
    run_oaml(
        "pipeline", "run", "--local", "--out", str(out), "--data-root", str(data_root),
        "--work-dir", str(demo_run.work), "--registered-model", "fmnist-detector",
        *TINY_RECIPE, timeout=900,
    )  # fmt: skip
    # Every training stage was reused, untouched.
    assert {"teacher", "start", "student"} <= {p.parent.name.split("-")[0] for p in trained}
    assert {p: p.stat().st_mtime_ns for p in demo_run.work.glob("*/checkpoint.pt")} == trained
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tracking_uri"] == tracking_server
    assert (summary["registered_model"], summary["version"], summary["alias"]) == (
        "fmnist-detector", "1", "challenger",
    )  # fmt: skip

    client = mlflow.MlflowClient(tracking_server)
    parent, by_stage = services.stage_runs(tracking_server, summary["mlflow_parent_run_id"])
    assert parent.data.metrics["far_auroc"] == pytest.approx(summary["metrics"]["far"]["auroc"])
    assert set(by_stage) == STAGES
    student = by_stage["student"]
    assert {"train_loss", "train_kd", "val_accuracy", "images_per_second"} <= set(
        student.data.metrics
    )
    assert student.data.params["method"] == "oaml" and student.inputs.dataset_inputs
    assert by_stage["evaluate"].data.metrics["id.accuracy"] == pytest.approx(
        summary["metrics"]["id"]["accuracy"]
    )
    history = client.get_metric_history(by_stage["teacher"].info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1]

    # Artifacts went through the server into the S3 bucket.
    keys = s3_store.keys("mlflow/")
    names = {k.rsplit("/", 1)[-1] for k in keys}
    assert {"model.onnx", "MLmodel", "roc_curves.png", "score_histograms.png", "checkpoint.pt"} <= (
        names
    )
    assert {"metrics.json", "preset.yaml", "manifest.json"} <= names

    # The registered version: tags and alias, loadable by alias as the server loads it.
    version = client.get_model_version_by_alias("fmnist-detector", "challenger")
    far = summary["metrics"]["far"]["auroc"]
    assert float(version.tags["metric.far_auroc"]) == pytest.approx(far, abs=1e-6)
    assert version.tags["preset"] == "quick" and version.tags["kfp.run_id"]
    assert len(version.tags["git_commit"]) in (0, 40)
    assert version.tags["data_manifest_sha256"] == summary_manifest(summary)
    from oaml.serving.detector import Detector
    from oaml.serving.model_source import resolve_model

    mlflow.set_tracking_uri(tracking_server)  # as `oaml serve` gets it from its environment
    source = resolve_model("models:/fmnist-detector@challenger", tmp_path / "download")
    assert source.version == "1"
    detector = Detector(source.path)
    logits, energy, _ = detector.run(np.zeros((2, 28, 28, 1), dtype=np.uint8))
    assert logits.shape == (2, 10) and energy.shape == (2,)

    # Promotion against the server: the first champion passes; a constructed worse challenger
    # (the same model re-registered with a lower far AUROC) is refused, naming the metric.
    assert "is now champion" in run_oaml("registry", "promote", "fmnist-detector").stdout
    from oaml.tracking.registry import copy_version

    worse = copy_version("fmnist-detector", "1", "fmnist-detector", alias="challenger")
    client.set_model_version_tag(
        "fmnist-detector", worse.version, "metric.far_auroc", f"{far - 0.05:.6f}"
    )
    refused = run_oaml("registry", "promote", "fmnist-detector", check=False)
    assert refused.returncode == 2 and "far_auroc" in refused.stderr
    champion = client.get_model_version_by_alias("fmnist-detector", "champion")
    assert str(champion.version) == "1"

    # The champion's Triton repository, fetched and verified as the Triton pods' init container
    # does, from MLflow's S3-backed artifacts.
    version = client.get_model_version("fmnist-detector", "1")
    out = tmp_path / "triton-models"
    run_oaml("registry", "fetch-triton", "models:/fmnist-detector/1", "--out", str(out),
             "--sha256", version.tags["triton_sha256"])  # fmt: skip
    assert (out / "fmnist-detector" / "config.pbtxt").is_file()
    assert (out / "fmnist-detector" / "1" / "model.onnx").is_file()
    assert os.environ["MLFLOW_TRACKING_URI"] == tracking_server
    mlflow.set_tracking_uri(None)


def summary_manifest(summary: dict) -> str:
    from oaml.data.prepare import manifest_sha256

    return manifest_sha256("fmnist", summary["data_root"])
