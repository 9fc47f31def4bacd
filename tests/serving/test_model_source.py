"""Serving `models:/NAME@ALIAS` from a real (local, file-backed) MLflow registry."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import onnx
import pytest

from oaml.serving.detector import DetectorError
from oaml.serving.model_source import resolve_model
from tests.serving.conftest import running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_onnx):
    """A sqlite MLflow store with the tiny detector registered as version 1, alias champion."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    script = f"""
import mlflow, onnx
mlflow.set_tracking_uri({uri!r})
mlflow.set_experiment("serve-test")
with mlflow.start_run():
    mlflow.onnx.log_model(onnx.load({str(tiny_onnx)!r}), name="detector",
                          registered_model_name="fmnist-detector")
mlflow.MlflowClient().set_registered_model_alias("fmnist-detector", "champion", "1")
"""
    env = {**os.environ, "MLFLOW_ARTIFACTS_DESTINATION": str(folder / "artifacts")}
    subprocess.run([sys.executable, "-c", script], check=True, cwd=folder, env=env,
                   capture_output=True)  # fmt: skip
    return uri


def test_registry_uri_resolves_to_the_registered_onnx(registry, monkeypatch, tmp_path, tiny_onnx):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    source = resolve_model("models:/fmnist-detector@champion", tmp_path)
    assert source.name == "fmnist-detector" and source.version == "1"
    meta = {p.key: p.value for p in onnx.load(str(source.path)).metadata_props}
    assert meta["oaml.format"] == "oaml-detector/1"
    with pytest.raises(DetectorError, match="cannot load"):
        resolve_model("models:/fmnist-detector@missing", tmp_path)
    with pytest.raises(DetectorError, match="models:/NAME@ALIAS"):
        resolve_model("models:/a/b/c", tmp_path)


def test_server_serves_a_registry_alias(registry, tiny_onnx):
    with running_server(
        "models:/fmnist-detector@champion", env={"MLFLOW_TRACKING_URI": registry}
    ) as proc:
        meta = httpx.get(f"{proc.url}/v2/models/fmnist-detector").json()
        assert meta["versions"] == ["1"]
        assert meta["parameters"]["class_names"][0] == "t-shirt/top"
