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


def test_training_stage_on_two_local_processes_logs_its_curve(
    tmp_path, data_root, own_tracking_uri
):
    """gpus_per_node=2 on one node: the stage trains under torchrun in the step (gloo here)
    and still logs every epoch's terms to its MLflow run, read back from the checkpoint."""
    from oaml.models.checkpoint import read_checkpoint
    from oaml.stages import train_from_scratch
    from oaml.training.scale_out import ScaleOut

    tracking = Tracking(embedded_uri(tmp_path / "mlflow"))
    overrides = [
        "student.train.train_subset=1200", "student.train.batch_size=60",
        "student.model.width=0.125", "student.train.epochs=2",
    ]  # fmt: skip
    out = tmp_path / "start"
    checkpoint = train_from_scratch(
        "start", "quick", overrides, data_root, out, tracking, device="cpu",
        work_dir=tmp_path / "work", scale=ScaleOut(gpus_per_node=2),
    )  # fmt: skip
    payload = read_checkpoint(checkpoint)
    assert payload["lineage"]["processes"] == 2 and payload["epoch"] == 2
    client = mlflow.MlflowClient(tracking.tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("oaml").experiment_id])[0]
    assert run.data.params["gpus_per_node"] == "2"
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in losses] == [1, 2]
