"""Pipeline stages as plain functions: the outlier stage with a Stable Diffusion checkpoint."""

import json

import mlflow
import pytest

from oaml.stages import synthesize_outliers
from oaml.synthesis.tiny_sd import build_tiny_sd
from oaml.tracking.runs import Tracking
from oaml.tracking.store import embedded_uri


@pytest.fixture()
def own_tracking_uri():
    """Stages set MLflow's process-wide tracking URI; give later tests theirs back."""
    yield
    mlflow.set_tracking_uri(None)


def test_outlier_stage_generates_with_stable_diffusion(tmp_path, data_root, own_tracking_uri):
    tracking = Tracking(embedded_uri(tmp_path / "mlflow"))
    model = build_tiny_sd(tmp_path / "tiny_sd")
    overrides = [
        f"outliers.sd_checkpoint={json.dumps(str(model))}", "outliers.count=20",
        "outliers.sd_steps=2", "outliers.sd_size=16",
    ]  # fmt: skip
    out = tmp_path / "artifact"
    synthesize_outliers("quick", overrides, data_root, out, tracking, work_dir=tmp_path / "work")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "stable_diffusion" and manifest["count"] == 20
    assert all((out / name).is_file() for name in manifest["latents"] + manifest["images"])
    assert (out / "embeddings.npy").is_file() and (tmp_path / "artifact_samples.png").is_file()
    run = mlflow.MlflowClient(tracking.tracking_uri).search_runs(
        [mlflow.MlflowClient(tracking.tracking_uri).get_experiment_by_name("oaml").experiment_id]
    )[0]
    assert run.data.params["backend"] == "stable-diffusion"
    assert run.data.params["n_per_class"] == "2"
