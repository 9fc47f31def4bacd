"""The whole pipeline with every stage in the training image (kfp.local's DockerRunner on the
engine's Docker API), against a real `mlflow server` on PostgreSQL with SeaweedFS S3: the
closest this machine gets to a Kubeflow cluster. It catches a missing file, a wrong path, a
root-only write or an import only the host has. `make test-images` runs it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest

from tests.conftest import TINY_RECIPE, run_oaml
from tests.docker import engine as eng
from tests.tracking import services

pytestmark = [pytest.mark.slow, pytest.mark.images]

IMAGE_UID = 1000  # docker/Dockerfile's USER
STAGES = {"data", "outliers", "teacher", "start", "student", "evaluate", "export", "register"}


@pytest.fixture(scope="module")
def docker_host(tmp_path_factory):
    engine = eng.require_engine()
    eng.built(engine, "train-image")
    with eng.docker_api(engine, tmp_path_factory.mktemp("engine")) as host:
        yield host


def test_pipeline_in_the_training_image_registers_a_loadable_model(
    tmp_path, data_root, tracking_server, s3_store, docker_host, monkeypatch
):
    env = {"MLFLOW_TRACKING_URI": tracking_server, "DOCKER_HOST": docker_host}
    for key, value in {**env, **services.s3_env(s3_store)}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "pipeline"
    run_oaml(
        "pipeline", "run", "--local", "--runner", "docker", "--image", eng.TRAIN_IMAGE,
        "--out", str(out), "--data-root", str(data_root), "--device", "cpu",
        "--registered-model", "container-detector", *TINY_RECIPE, timeout=2400,
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["runner"], summary["image"]) == ("docker", eng.TRAIN_IMAGE)
    assert (summary["version"], summary["alias"]) == ("1", "challenger")

    _, by_stage = services.stage_runs(tracking_server, summary["mlflow_parent_run_id"])
    assert set(by_stage) == STAGES
    # Every stage ran inside the image, as its user: what each wrote belongs to uid 1000 (the
    # tests run as root here; as uid 1000 this would hold without containers).
    if os.geteuid() == IMAGE_UID:
        pytest.skip("the tests run as uid 1000 too: file ownership cannot tell who wrote them")
    tasks = [p for p in Path(summary["kfp_run_dir"]).iterdir() if p.is_dir()]
    assert len(tasks) >= 11 and {p.stat().st_uid for p in tasks} == {IMAGE_UID}
    assert {p.stat().st_uid for p in (out / "work").iterdir()} == {IMAGE_UID}

    from oaml.serving.detector import Detector
    from oaml.serving.model_source import resolve_model

    mlflow.set_tracking_uri(tracking_server)
    try:
        source = resolve_model("models:/container-detector@challenger", tmp_path / "download")
    finally:
        mlflow.set_tracking_uri(None)
    logits, energy, _ = Detector(source.path).run(np.zeros((2, 28, 28, 1), dtype=np.uint8))
    assert logits.shape == (2, 10) and np.isfinite(energy).all()
