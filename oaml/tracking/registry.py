"""The model registry: register the exported detector, then promote it behind a quality gate.

Aliases, not the deprecated stages: the pipeline's last step sets `challenger`;
`promote` moves `champion` to the challenger only when its tagged metrics pass the gate.
Every promotion is recorded as tags on the promoted version, which is the history view.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oaml.contract import INPUT_NAME, ONNX_SHA256_TAG, Meta, main_onnx
from oaml.io import sha256_file

CHALLENGER = "challenger"
CHAMPION = "champion"
METRIC_PREFIX = "metric."
# The gated metrics, read from an evaluation's JSON (ACCEPTANCE's evaluate shape).
GATED_METRICS = {
    "id_accuracy": ("id", "accuracy"),
    "near_auroc": ("near", "auroc"),
    "far_auroc": ("far", "auroc"),
    "near_fpr95": ("near", "fpr95"),
    "far_fpr95": ("far", "fpr95"),
}


class PromotionError(Exception):
    """A promotion that cannot happen: a failed gate, a missing alias, a bad request."""


@dataclass(frozen=True)
class Gate:
    """When a challenger may replace the champion (metrics are fractions in [0, 1])."""

    auroc_tolerance: float = 0.0  # near/far AUROC may be at most this much lower
    fpr95_tolerance: float = 0.01  # near/far fpr95 may be at most this much higher
    max_accuracy_drop: float = 0.005  # ID accuracy may drop at most this much


@dataclass
class GateResult:
    passed: bool
    failures: list[str] = field(default_factory=list)
    compared: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)


def gated_metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    """The gated numbers of an evaluation JSON, flat; sets a benchmark lacks are left out."""
    found: dict[str, float] = {}
    for name, (group, key) in GATED_METRICS.items():
        value = (evaluation.get(group) or {}).get(key)
        if value is not None:
            found[name] = float(value)
    return found


# Every evaluation measures these; the AUROC and FPR95 of near or far depend on the benchmark.
REQUIRED_METRICS = ("id_accuracy",)
# Tags two versions must share to be compared at all: the same benchmark on the same data.
COMPARABLE_TAGS = ("benchmark", "data_manifest_sha256")


def metric_problems(metrics: dict[str, float], who: str) -> list[str]:
    """Why these metrics cannot be gated: one missing, not a number, or outside [0, 1]."""
    problems = [f"{who} has no {name} metric" for name in REQUIRED_METRICS if name not in metrics]
    if not any(name.endswith("auroc") for name in metrics):
        problems.append(f"{who} has no AUROC metric (near_auroc or far_auroc)")
    for name, value in metrics.items():
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            problems.append(f"{who}'s {name} is {value!r}, not a fraction in [0, 1]")
    return problems


def check_gate(challenger: dict[str, float], champion: dict[str, float], gate: Gate) -> GateResult:
    """Compare the challenger's metrics with the champion's; name every metric that fails.
    Fails closed: unusable metrics on either side, or a metric only one side has, fail."""
    result = GateResult(passed=True)
    result.failures += metric_problems(challenger, "the challenger")
    result.failures += metric_problems(champion, "the champion")
    for name in GATED_METRICS:
        new, old = challenger.get(name), champion.get(name)
        result.compared[name] = (new, old)
        if old is None and new is None:
            continue  # neither measured it (the benchmark lacks that group)
        if old is None:
            result.failures.append(f"{name}: the champion has no value to compare with")
            continue
        if new is None:
            result.failures.append(f"{name}: the challenger has no value (champion {old:.4f})")
            continue
        if name.endswith("auroc") and new < old - gate.auroc_tolerance:
            limit = f"tolerance {gate.auroc_tolerance}"
            result.failures.append(f"{name} {new:.4f} < champion {old:.4f} ({limit})")
        elif name.endswith("fpr95") and new > old + gate.fpr95_tolerance:
            limit = f"tolerance {gate.fpr95_tolerance}"
            result.failures.append(f"{name} {new:.4f} > champion {old:.4f} ({limit})")
        elif name == "id_accuracy" and new < old - gate.max_accuracy_drop:
            limit = f"max drop {gate.max_accuracy_drop}"
            result.failures.append(f"{name} {new:.4f} < champion {old:.4f} ({limit})")
    result.passed = not result.failures
    return result


def _client(tracking_uri: str | None = None):
    import mlflow

    return mlflow.MlflowClient(tracking_uri)


def version_metrics(version: Any) -> dict[str, float]:
    """The gated metrics a registered version carries as `metric.*` tags (an unreadable value
    reads as NaN, which the gate refuses)."""
    metrics = {}
    for key, value in version.tags.items():
        if key.startswith(METRIC_PREFIX):
            try:
                metrics[key.removeprefix(METRIC_PREFIX)] = float(value)
            except ValueError:
                metrics[key.removeprefix(METRIC_PREFIX)] = math.nan
    return metrics


def _by_alias(client, name: str, alias: str):
    """The version `alias` points at; None only when MLflow says it does not exist. Any other
    error (the server unreachable, a permission refused) stops the promotion: a gate that
    cannot read the champion must not wave the challenger through."""
    from mlflow.exceptions import MlflowException

    try:
        # The aliases first: stores answer a missing alias with differing error codes, but a
        # missing model always with RESOURCE_DOES_NOT_EXIST.
        if alias not in client.get_registered_model(name).aliases:
            return None
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise PromotionError(
            f"cannot read {name}@{alias} from MLflow ({exc.error_code}: {exc.message}); "
            "nothing was promoted"
        ) from None


def comparability_problems(challenger: Any, champion: Any) -> list[str]:
    """The tags (benchmark, data manifest) on which two versions differ or one lacks."""
    problems = []
    for tag in COMPARABLE_TAGS:
        new, old = challenger.tags.get(tag), champion.tags.get(tag)
        if not new or not old:
            problems.append(f"{tag}: a version has none (challenger {new!r}, champion {old!r})")
        elif new != old:
            problems.append(f"{tag} differs (challenger {new!r}, champion {old!r})")
    return problems


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    alias: str
    model_uri: str
    run_id: str


def register_detector(
    onnx_path: str | Path,
    name: str,
    evaluation: dict[str, Any],
    tags: dict[str, str],
    alias: str = CHALLENGER,
    triton_repo: str | Path | None = None,
) -> Registered:
    """Log the ONNX detector to the active run (signature, input example, its metadata),
    register it as a new version of `name`, tag the version and point `alias` at it.
    `triton_repo`, a Triton model repository of the same graph, is logged beside it."""
    import mlflow
    import numpy as np
    import onnx
    from mlflow.models import infer_signature

    model = onnx.load(str(onnx_path))
    metadata = {p.key: p.value for p in model.metadata_props}
    size, channels = int(metadata[Meta.INPUT_SIZE]), int(metadata[Meta.CHANNELS])
    example = np.zeros((1, size, size, channels), dtype=np.uint8)
    outputs = _run_onnx(onnx_path, example)
    signature = infer_signature({INPUT_NAME: example}, outputs)
    info = mlflow.onnx.log_model(
        model,
        name="detector",
        signature=signature,
        input_example={INPUT_NAME: example},
        metadata=metadata,
        registered_model_name=name,
        save_as_external_data=False,  # one self-contained file, as `oaml export` wrote it
    )
    version = str(info.registered_model_version)
    client = _client()
    all_tags = {f"{METRIC_PREFIX}{k}": f"{v:.6f}" for k, v in gated_metrics(evaluation).items()}
    all_tags[ONNX_SHA256_TAG] = _stored_onnx_sha256(name, version)
    if triton_repo is not None:
        from oaml.tracking.triton_repo import log_triton_repo

        all_tags.update(log_triton_repo(triton_repo))
    lineage = json.loads(metadata.get(Meta.LINEAGE, "{}"))
    for key in ("data_manifest_sha256", "checkpoint_sha256", "method", "benchmark"):
        if lineage.get(key):
            all_tags[key] = str(lineage[key])
    all_tags.update({k: str(v) for k, v in tags.items() if v is not None})
    for key, value in all_tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, alias, version)
    return Registered(name, version, alias, f"models:/{name}@{alias}", info.run_id)


def _stored_onnx_sha256(name: str, version: str) -> str:
    """SHA-256 of the ONNX file as the registry stores it (MLflow re-serialises the model, so
    the stored bytes, not the exported file's, are what a server will download and verify)."""
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory(prefix="oaml-register-") as folder:
        local = Path(
            mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=folder)
        )
        path = main_onnx(sorted(local.rglob("*.onnx")))
        if path is None:
            raise PromotionError(f"{name} version {version} was logged without an .onnx file")
        return sha256_file(path)


def _run_onnx(path: str | Path, images) -> dict[str, Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {INPUT_NAME: images}), strict=True))


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    previous: str | None
    gate: GateResult
    forced: bool


def promote(
    name: str,
    gate: Gate = Gate(),
    force: bool = False,
    reason: str = "",
    source_alias: str = CHALLENGER,
    target_alias: str = CHAMPION,
    tracking_uri: str | None = None,
) -> Promotion:
    """Move `target_alias` to the version `source_alias` points at, if it passes `gate` against
    the current holder (the first champion passes by default). `force` needs a reason."""
    client = _client(tracking_uri)
    challenger = _by_alias(client, name, source_alias)
    if challenger is None:
        raise PromotionError(
            f"{name} has no version with alias {source_alias!r}: run the pipeline (its last step "
            f"sets it) or `oaml registry list` to see what exists"
        )
    champion = _by_alias(client, name, target_alias)
    if champion is not None and champion.version == challenger.version:
        raise PromotionError(f"{name} version {challenger.version} is already {target_alias}")
    if force and not reason.strip():
        raise PromotionError("--force needs --reason: why the gate is overridden is recorded")
    if champion is not None:
        result = check_gate(version_metrics(challenger), version_metrics(champion), gate)
        result.failures += comparability_problems(challenger, champion)
        result.passed = not result.failures
        against = f"{target_alias} version {champion.version}"
    else:  # the first champion is compared with nothing, but its metrics must be usable
        result = GateResult(passed=True, failures=metric_problems(
            version_metrics(challenger), "the challenger"
        ))  # fmt: skip
        result.passed = not result.failures
        against = "the gate's checks"
    if not result.passed and not force:
        raise PromotionError(
            f"{name} version {challenger.version} does not pass {against}: "
            + "; ".join(result.failures)
        )
    # Re-read just before the alias moves: a promotion that raced this one wins, this aborts.
    now = _by_alias(client, name, target_alias)
    if (now and now.version) != (champion and champion.version):
        raise PromotionError(
            f"{name}@{target_alias} changed to version {now and now.version} during this "
            "promotion; nothing was promoted, run it again to compare with the new holder"
        )
    client.set_registered_model_alias(name, target_alias, challenger.version)
    record = {
        "promotion.at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "promotion.alias": target_alias,
        "promotion.previous": str(champion.version) if champion is not None else "",
        "promotion.gate": "passed" if result.passed else "failed: " + "; ".join(result.failures),
    }
    if force:
        record["promotion.forced_reason"] = reason
    for key, value in record.items():
        client.set_model_version_tag(name, challenger.version, key, value[:5000])
    return Promotion(
        name,
        str(challenger.version),
        None if champion is None else str(champion.version),
        result,
        forced=force and not result.passed,
    )


def copy_version(
    name: str, reference: str, destination: str, alias: str = CHALLENGER
) -> Registered:
    """Copy version `reference` (a number or an alias) of `name` to the registered model
    `destination` (dev -> prod), with its tags, and point `alias` there at the copy."""
    client = _client()
    source = (
        client.get_model_version(name, reference)
        if reference.isdigit()
        else _by_alias(client, name, reference)
    )
    if source is None:
        raise PromotionError(f"{name} has no version or alias {reference!r}")
    copied = client.copy_model_version(f"models:/{name}/{source.version}", destination)
    for key, value in source.tags.items():
        client.set_model_version_tag(destination, copied.version, key, value)
    client.set_model_version_tag(
        destination, copied.version, "copied_from", f"{name}/{source.version}"
    )
    if alias:
        client.set_registered_model_alias(destination, alias, copied.version)
    return Registered(
        destination,
        str(copied.version),
        alias,
        f"models:/{destination}/{copied.version}",
        copied.run_id or "",
    )


def list_models() -> list[dict[str, Any]]:
    """Registered models with their aliases and newest version."""
    client = _client()
    rows = []
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name='{model.name}'")
        rows.append(
            {
                "name": model.name,
                "aliases": dict(sorted(model.aliases.items())),
                "latest": max((int(v.version) for v in versions), default=None),
                "versions": len(versions),
            }
        )
    return rows


def history(name: str) -> list[dict[str, Any]]:
    """Every version of `name`, newest first: metrics, aliases, promotion records."""
    client = _client()
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise PromotionError(f"no registered model named {name!r} (see `oaml registry list`)")
    aliases = client.get_registered_model(name).aliases
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        rows.append(
            {
                "version": str(v.version),
                "aliases": sorted(by_version.get(str(v.version), [])),
                "created": time.strftime(
                    "%Y-%m-%d %H:%M", time.gmtime(v.creation_timestamp / 1000)
                ),
                "metrics": version_metrics(v),
                "promotion": {
                    k.removeprefix("promotion."): val
                    for k, val in v.tags.items()
                    if k.startswith("promotion.")
                },
                "kfp_run_id": v.tags.get("kfp.run_id", ""),
                "git_commit": v.tags.get("git_commit", ""),
            }
        )
    return rows
