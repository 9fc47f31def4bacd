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
    """A sqlite MLflow store with the tiny detector registered as the pipeline registers it
    (version 1, alias champion); version 2 logged by plain MLflow, without the SHA-256 tag
    (alias untagged); version 3 registered, then its tag changed (alias tampered)."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    script = f"""
import mlflow, onnx
from oaml.tracking.registry import register_detector
mlflow.set_tracking_uri({uri!r})
mlflow.set_experiment("serve-test")
evaluation = {{"id": {{"accuracy": 0.9}}, "far": {{"auroc": 0.9, "fpr95": 0.3}}}}
client = mlflow.MlflowClient()
with mlflow.start_run():
    register_detector({str(tiny_onnx)!r}, "fmnist-detector", evaluation, {{}}, alias="champion")
with mlflow.start_run():
    mlflow.onnx.log_model(onnx.load({str(tiny_onnx)!r}), name="detector",
                          registered_model_name="fmnist-detector")
client.set_registered_model_alias("fmnist-detector", "untagged", "2")
with mlflow.start_run():
    register_detector({str(tiny_onnx)!r}, "fmnist-detector", evaluation, {{}}, alias="tampered")
client.set_model_version_tag("fmnist-detector", "3", "onnx_sha256", "0" * 64)
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
    # What is served is what was registered, byte for byte, or nothing.
    with pytest.raises(DetectorError, match="has no onnx_sha256 tag"):
        resolve_model("models:/fmnist-detector@untagged", tmp_path / "untagged")
    with pytest.raises(DetectorError, match="artifact changed after registration"):
        resolve_model("models:/fmnist-detector@tampered", tmp_path / "tampered")


def test_server_serves_a_registry_alias(registry, tiny_onnx):
    with running_server(
        "models:/fmnist-detector@champion", env={"MLFLOW_TRACKING_URI": registry}
    ) as proc:
        meta = httpx.get(f"{proc.url}/v2/models/fmnist-detector").json()
        assert meta["versions"] == ["1"]
        assert meta["parameters"]["class_names"][0] == "t-shirt/top"
