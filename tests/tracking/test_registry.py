"""Registry promotion: the gate, aliases, forced promotions, copies, history (sqlite store)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import pytest

from oaml.tracking import registry
from oaml.tracking.store import embedded_uri, experiment_id
from tests.conftest import run_oaml


def evaluation(acc=0.90, near=0.80, far=0.90, near_fpr=0.5, far_fpr=0.3) -> dict:
    return {
        "id": {"accuracy": acc, "n": 100},
        "near": {"auroc": near, "fpr95": near_fpr},
        "far": {"auroc": far, "fpr95": far_fpr},
        "ood": {},
    }


def test_gate_names_every_failing_metric():
    champion = registry.gated_metrics(evaluation())
    worse = registry.gated_metrics(evaluation(acc=0.88, far=0.85, near_fpr=0.6))
    result = registry.check_gate(worse, champion, registry.Gate())
    assert not result.passed
    failed = " ".join(result.failures)
    assert "id_accuracy" in failed and "far_auroc" in failed and "near_fpr95" in failed
    assert "near_auroc" not in failed and "far_fpr95" not in failed


def test_gate_tolerances_are_configurable():
    champion = registry.gated_metrics(evaluation())
    slightly = registry.gated_metrics(evaluation(acc=0.897, near=0.795, far_fpr=0.305))
    assert registry.check_gate(slightly, champion, registry.Gate()).failures == [
        "near_auroc 0.7950 < champion 0.8000 (tolerance 0.0)"
    ]
    lenient = registry.Gate(auroc_tolerance=0.01, fpr95_tolerance=0.01, max_accuracy_drop=0.005)
    assert registry.check_gate(slightly, champion, lenient).passed
    strict = registry.Gate(auroc_tolerance=0.01, fpr95_tolerance=0.0, max_accuracy_drop=0.001)
    failures = registry.check_gate(slightly, champion, strict).failures
    assert [f.split()[0] for f in failures] == ["id_accuracy", "far_fpr95"]


@pytest.fixture()
def store(tmp_path, monkeypatch):
    uri = embedded_uri(tmp_path / "mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def register(onnx, evaluation_json, name="detector") -> registry.Registered:
    # The project's experiment keeps artifacts next to the sqlite file, not in ./mlruns.
    with mlflow.start_run(experiment_id=experiment_id(mlflow.get_tracking_uri())):
        return registry.register_detector(onnx, name, evaluation_json, {"preset": "quick"})


def test_register_promote_refuse_force_copy_and_history(store, tiny_onnx):
    first = register(tiny_onnx, evaluation())
    assert (first.version, first.alias) == ("1", "challenger")
    client = mlflow.MlflowClient()
    version = client.get_model_version("detector", "1")
    assert version.tags["metric.far_auroc"] == "0.900000" and version.tags["preset"] == "quick"
    assert version.tags["checkpoint_sha256"] and version.tags["data_manifest_sha256"]

    # The first champion needs no comparison.
    done = run_oaml("registry", "promote", "detector")
    assert "version 1 is now champion (first champion)" in done.stdout

    # A worse challenger is refused, naming the metric; champion stays.
    register(tiny_onnx, evaluation(far=0.85))
    refused = run_oaml("registry", "promote", "detector", check=False)
    assert refused.returncode == 2 and "far_auroc 0.8500 < champion 0.9000" in refused.stderr
    assert str(client.get_model_version_by_alias("detector", "champion").version) == "1"
    # ...unless the tolerance allows it, or it is forced with a recorded reason.
    no_reason = run_oaml("registry", "promote", "detector", "--force", check=False)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    forced = run_oaml(
        "registry", "promote", "detector", "--force", "--reason", "hotfix for label bug"
    )
    assert "FORCED past: far_auroc" in forced.stdout
    promoted = client.get_model_version_by_alias("detector", "champion")
    assert str(promoted.version) == "2"
    assert promoted.tags["promotion.forced_reason"] == "hotfix for label bug"
    assert promoted.tags["promotion.previous"] == "1"

    # A better challenger passes the gate.
    register(tiny_onnx, evaluation(far=0.95, acc=0.91))
    assert (
        "version 3 is now champion (was version 2)"
        in run_oaml("registry", "promote", "detector").stdout
    )

    # dev -> prod: the copy keeps the tags and gets its own alias.
    copied = run_oaml("registry", "copy", "detector", "--to", "detector-prod")
    assert "detector-prod version 1" in copied.stdout
    prod = client.get_model_version_by_alias("detector-prod", "challenger")
    assert prod.tags["metric.far_auroc"] == "0.950000" and prod.tags["copied_from"] == "detector/3"

    listed = run_oaml("registry", "list").stdout
    assert "detector " in listed and "champion=3" in listed and "detector-prod" in listed
    rows = json.loads(run_oaml("registry", "history", "detector", "--json").stdout)
    assert [r["version"] for r in rows] == ["3", "2", "1"]
    assert rows[0]["aliases"] == ["challenger", "champion"]
    assert rows[1]["promotion"]["forced_reason"] == "hotfix for label bug"


def test_promote_without_challenger_says_what_to_do(store):
    result = run_oaml("registry", "promote", "nothing-here", check=False)
    assert result.returncode == 2 and "no version with alias 'challenger'" in result.stderr


@pytest.mark.parametrize(
    ("challenger", "why"),
    [
        ({"far_auroc": float("nan")}, "far_auroc is nan"),
        ({"far_auroc": 1.5}, "far_auroc is 1.5"),
        ({"id_accuracy": None}, "the challenger has no id_accuracy"),
        ({"near_auroc": None, "far_auroc": None}, "has no AUROC metric"),
    ],
)
def test_gate_fails_closed_on_unusable_metrics(challenger, why):
    champion = registry.gated_metrics(evaluation())
    metrics = {**champion, **challenger}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    result = registry.check_gate(metrics, champion, registry.Gate())
    assert not result.passed and why in " ".join(result.failures)


def test_gate_refuses_a_champion_missing_what_the_challenger_measured():
    champion = registry.gated_metrics(evaluation())
    del champion["near_auroc"]
    result = registry.check_gate(registry.gated_metrics(evaluation()), champion, registry.Gate())
    assert result.failures == ["near_auroc: the champion has no value to compare with"]


def test_promotion_refuses_versions_of_other_data_and_unusable_first_champions(store, tiny_onnx):
    register(tiny_onnx, {**evaluation(), "far": {"auroc": float("nan"), "fpr95": 0.3}})
    with pytest.raises(registry.PromotionError, match="far_auroc is nan"):
        registry.promote("detector")
    register(tiny_onnx, evaluation())
    registry.promote("detector")  # version 2: a usable first champion
    better = register(tiny_onnx, evaluation(far=0.95))
    client = mlflow.MlflowClient()
    client.set_model_version_tag("detector", better.version, "data_manifest_sha256", "other")
    with pytest.raises(registry.PromotionError, match="data_manifest_sha256 differs"):
        registry.promote("detector")
    client.delete_model_version_tag("detector", better.version, "benchmark")
    with pytest.raises(registry.PromotionError, match="benchmark: a version has none"):
        registry.promote("detector")
    assert str(client.get_model_version_by_alias("detector", "champion").version) == "2"


def test_an_mlflow_error_while_reading_an_alias_stops_the_promotion(monkeypatch):
    """A tracking server that does not answer: an error naming the alias, not "no champion"."""
    from tests.tracking.services import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(registry.PromotionError, match="cannot read detector@challenger"):
        registry.promote("detector", tracking_uri=uri)


def test_a_promoted_triton_repository_is_fetched_only_with_its_digest(store, tiny_onnx, tmp_path):
    """Registration logs the Triton repository with its tree digest; promotion prints the
    digest it verified; the pods' init container (`oaml registry fetch-triton`) writes the
    repository only when it has that digest, and refuses an alias, a bad pin or a changed file."""
    from oaml.export.triton import write_triton_repo

    write_triton_repo(tiny_onnx, tmp_path / "repo", "detector")
    with mlflow.start_run(experiment_id=experiment_id(mlflow.get_tracking_uri())) as run:
        registry.register_detector(
            tiny_onnx, "detector", evaluation(), {}, triton_repo=tmp_path / "repo"
        )
    promoted = run_oaml("registry", "promote", "detector").stdout
    digest = re.search(r"TRITON_SHA256=([0-9a-f]{64})", promoted)[1]
    assert re.search(r"MODEL_SHA256=[0-9a-f]{64}", promoted)

    out = tmp_path / "models"
    run_oaml("registry", "fetch-triton", "models:/detector/1", "--out", str(out),
             "--sha256", digest)  # fmt: skip
    assert (out / "detector" / "config.pbtxt").is_file()
    assert (out / "detector" / "1" / "model.onnx").read_bytes() == tiny_onnx.read_bytes()
    assert [p.name for p in out.iterdir()] == ["detector"]  # nothing half-written beside it
    again = run_oaml("registry", "fetch-triton", "models:/detector/1", "--out", str(out),
                     env={"TRITON_SHA256": digest})  # fmt: skip
    assert "verified" in again.stdout  # a restarted init container replaces its copy

    for model, pin, why in (
        ("models:/detector@champion", digest, "give the pinned version"),
        ("models:/detector/1", "set-me", "is not a SHA-256"),
        ("models:/detector/1", "ab" * 32, "not the pinned"),
    ):
        refused = run_oaml("registry", "fetch-triton", model, "--out", str(tmp_path / "no"),
                           "--sha256", pin, check=False)  # fmt: skip
        assert refused.returncode != 0 and why in refused.stderr, refused.stderr
        assert not any((tmp_path / "no").glob("*/*")), "a refused repository was written"

    # The artifact rewritten after promotion (as a pipeline step with bucket access could).
    artifacts = Path(mlflow.get_run(run.info.run_id).info.artifact_uri.removeprefix("file://"))
    (artifacts / "triton" / "detector" / "config.pbtxt").write_text("tampered")
    refused = run_oaml("registry", "fetch-triton", "models:/detector/1", "--out",
                       str(tmp_path / "late"), "--sha256", digest, check=False)  # fmt: skip
    assert refused.returncode != 0 and "not the pinned" in refused.stderr
