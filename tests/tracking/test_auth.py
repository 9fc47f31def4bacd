"""MLflow locked down as k8s/base runs it: basic auth, users made by `oaml registry
ensure-users`, the pipeline's user registering and promoting, the detector's read-only user
serving the champion through proxied artifacts without any S3 credentials of its own."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
import yaml
from mlflow.exceptions import MlflowException

from oaml.tracking import registry
from tests.conftest import oaml_in_process, run_oaml
from tests.serving.bodies import infer_json
from tests.serving.conftest import running_server
from tests.tracking import services
from tests.tracking.test_registry import evaluation

pytestmark = pytest.mark.slow

S3_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")


@pytest.fixture(scope="module")
def auth_server(s3_store, tmp_path_factory):
    """`mlflow server --app-name basic-auth` with k8s/'s basic_auth.ini (default permission
    READ, credentials cached for a minute), admin from the env."""
    why = services.postgres_reachable()
    if why:
        pytest.skip(why)
    folder = tmp_path_factory.mktemp("mlflow_auth")
    config = folder / "basic_auth.ini"
    config.write_text(deployed_auth_config(f"sqlite:///{folder / 'auth.db'}"))
    admin = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": secrets.token_hex(8)}
    server_env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_USERNAME": admin["MLFLOW_TRACKING_USERNAME"],
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin["MLFLOW_TRACKING_PASSWORD"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),  # CSRF tokens of the auth UI
    }
    with (
        services.fresh_database() as backend,
        services.mlflow_server(
            backend, s3_store, folder, extra_args=("--app-name", "basic-auth"), extra_env=server_env
        ) as url,
    ):
        yield url, admin


def deployed_auth_config(database_uri: str) -> str:
    """k8s/'s basic_auth.ini template with this database: the server runs what is deployed."""
    path = Path(__file__).parents[2] / "k8s" / "secrets" / "oaml-mlflow-db.example.yaml"
    template = yaml.safe_load(path.read_text())["stringData"]["basic_auth.ini"]
    return template.replace("database_uri = REPLACE_ME", f"database_uri = {database_uri}")


def _users() -> dict[str, str]:
    return {
        "PIPE_USERNAME": "oaml-pipeline",
        "PIPE_PASSWORD": secrets.token_hex(8),
        "DET_USERNAME": "oaml-detector",
        "DET_PASSWORD": secrets.token_hex(8),
    }


def _as(monkeypatch, url: str, username: str, password: str) -> mlflow.MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    mlflow.set_tracking_uri(url)
    return mlflow.MlflowClient(url)


def test_users_pipeline_writes_detector_only_reads_and_serves_without_s3_keys(
    auth_server, tiny_onnx, monkeypatch
):
    url, admin = auth_server
    users = _users()
    env = {**admin, **users, "MLFLOW_TRACKING_URI": url}
    made = run_oaml("registry", "ensure-users", "--from-env", "PIPE", "--from-env", "DET", env=env)
    assert "oaml-pipeline: created" in made.stdout and "oaml-detector: created" in made.stdout
    again = run_oaml("registry", "ensure-users", "--from-env", "DET", env=env)
    assert "oaml-detector: password set" in again.stdout  # idempotent, as a re-applied Job

    # Nobody gets in without the right password.
    assert httpx.get(f"{url}/api/2.0/mlflow/experiments/search?max_results=1").status_code == 401
    client = _as(monkeypatch, url, "oaml-detector", "wrong")
    with pytest.raises(MlflowException, match="401"):
        client.search_experiments()

    # The pipeline's user registers a version and promotes it.
    _as(monkeypatch, url, users["PIPE_USERNAME"], users["PIPE_PASSWORD"])
    mlflow.set_experiment("oaml-auth")
    with mlflow.start_run():
        registered = registry.register_detector(
            tiny_onnx, "oaml-detector", evaluation(), {"preset": "quick"}, alias="champion"
        )

    # The detector's user reads everything it needs and changes nothing.
    client = _as(monkeypatch, url, users["DET_USERNAME"], users["DET_PASSWORD"])
    assert client.get_model_version_by_alias("oaml-detector", "champion").version == (
        registered.version
    )
    with pytest.raises(MlflowException, match="(?i)permission"):
        client.set_registered_model_alias("oaml-detector", "champion", "1")
    with pytest.raises(MlflowException, match="(?i)permission"):
        client.delete_registered_model("oaml-detector")

    for name in S3_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    serve_env = {"MLFLOW_TRACKING_URI": url}
    assert not any(name in os.environ for name in S3_VARIABLES)
    with running_server("models:/oaml-detector@champion", env=serve_env) as server:
        images = np.zeros((2, 28, 28, 1), np.uint8)
        answer = httpx.post(f"{server.url}/v2/models/oaml-detector/infer", json=infer_json(images))
        assert answer.status_code == 200, answer.text


def test_ensure_users_names_a_missing_credential(monkeypatch):
    monkeypatch.delenv("NOBODY_USERNAME", raising=False)
    done = oaml_in_process("registry", "ensure-users", "--from-env", "NOBODY")
    assert done.returncode == 2
    assert "set NOBODY_USERNAME and NOBODY_PASSWORD" in done.stderr + done.stdout


def test_promotion_belongs_to_the_promoter_and_the_detector_serves_only_its_digest(
    auth_server, tiny_onnx, monkeypatch
):
    """The pipeline's user registers but cannot promote (the records are the promoter's); a
    champion's metric tags rewritten by the pipeline do not move the gate; a tag that no longer
    matches the file stops the promotion; the detector serves only the printed digest."""
    url, admin = auth_server
    users = {**_users(), "PROMO_USERNAME": "oaml-promoter", "PROMO_PASSWORD": secrets.token_hex(8)}
    env = {**admin, **users, "MLFLOW_TRACKING_URI": url}
    made = run_oaml(
        "registry", "ensure-users", "--from-env", "PIPE", "--from-env", "DET",
        "--promoter", "PROMO", "--model", "guarded", env=env,
    )  # fmt: skip
    assert "oaml-promoter: writes promotion records" in made.stdout
    pipeline = (users["PIPE_USERNAME"], users["PIPE_PASSWORD"])
    promoter = (users["PROMO_USERNAME"], users["PROMO_PASSWORD"])

    client = _as(monkeypatch, url, *pipeline)
    mlflow.set_experiment("oaml-promotion-auth")
    with mlflow.start_run():
        first = registry.register_detector(tiny_onnx, "guarded", evaluation(), {})
    with pytest.raises(registry.PromotionError, match="promoter user"):
        registry.promote("guarded")
    assert "champion" not in client.get_registered_model("guarded").aliases

    _as(monkeypatch, url, *promoter)
    done = registry.promote("guarded")
    assert done.version == first.version and len(done.onnx_sha256) == 64

    # The pipeline lowers the champion's metric tags so a worse challenger would pass.
    client = _as(monkeypatch, url, *pipeline)
    with mlflow.start_run():
        worse = registry.register_detector(tiny_onnx, "guarded", evaluation(far=0.60), {})
    for key in ("metric.far_auroc", "metric.near_auroc"):
        client.set_model_version_tag("guarded", first.version, key, "0.1")
    _as(monkeypatch, url, *promoter)
    with pytest.raises(registry.PromotionError, match="far_auroc"):
        registry.promote("guarded")

    # A digest tag rewritten after registration: not promoted, even when forced.
    client = _as(monkeypatch, url, *pipeline)
    client.set_model_version_tag("guarded", worse.version, "onnx_sha256", "0" * 64)
    _as(monkeypatch, url, *promoter)
    with pytest.raises(registry.PromotionError, match="changed after registration"):
        registry.promote("guarded", force=True, reason="test")
    assert str(client.get_model_version_by_alias("guarded", "champion").version) == first.version

    det = {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": users["DET_USERNAME"]}
    det["MLFLOW_TRACKING_PASSWORD"] = users["DET_PASSWORD"]
    pinned = f"models:/guarded/{first.version}"
    with running_server(pinned, "--model-sha256", done.onnx_sha256, env=det) as server:
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    for digest, why in (("ab" * 32, "not the pinned"), ("set-me", "is not a SHA-256")):
        refused = run_oaml("serve", "--model", pinned, env={**det, "OAML_MODEL_SHA256": digest},
                           check=False)  # fmt: skip
        assert refused.returncode != 0 and why in refused.stdout + refused.stderr
