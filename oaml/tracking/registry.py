"""The model registry: register the exported detector, then promote it behind a quality gate.

Aliases, not the deprecated stages: the pipeline's last step sets `challenger`;
`promote` moves `champion` to the challenger only when its tagged metrics pass the gate.
Every promotion is recorded as tags on the promoted version, which is the history view.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oaml.contract import INPUT_NAME, ONNX_SHA256_TAG, Meta
from oaml.tracking import promotions
from oaml.tracking.gate import (  # the gate's names are the registry's too
    METRIC_PREFIX,
    SCORE_TAG,
    Gate,
    GateResult,
    check_gate,
    comparability_problems,
    gated_metrics,
    metric_problems,
)

CHALLENGER = "challenger"
CHAMPION = "champion"


class PromotionError(Exception):
    """A promotion that cannot happen: a failed gate, a missing alias, a bad request."""


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


def champion_metrics(
    name: str, benchmark: str, score: str, tracking_uri: str | None = None
) -> tuple[dict[str, float] | None, str]:
    """The champion's gated metrics where they compare with an evaluation of `benchmark` under
    `score`, else None; and a note that says which version it is, or why it is not shown."""
    from mlflow.exceptions import MlflowException

    try:
        version = _by_alias(_client(tracking_uri), name, CHAMPION)
    except (PromotionError, MlflowException, OSError) as exc:
        return None, f"the registry could not be read ({exc})"
    if version is None:
        return None, f"{name} has no {CHAMPION} yet"
    where = f"{name} version {version.version}"
    served = version.tags.get(SCORE_TAG, "ebo")
    if version.tags.get("benchmark") not in (None, benchmark) or served != score:
        return None, (
            f"{where} was measured on {version.tags.get('benchmark')} with the {served} score, "
            f"not comparable with {benchmark} under {score}"
        )
    return version_metrics(version), f"{where} (@{CHAMPION})"


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
    served = metadata.get(Meta.SCORE, "ebo")
    if evaluation.get("score", "ebo") != served:
        raise PromotionError(
            f"the metrics measure the {evaluation.get('score')!r} score but {onnx_path} decides "
            f"on {served!r}: evaluate (or export) with the same score; nothing was registered"
        )
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
    all_tags[SCORE_TAG] = served
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
    try:
        return promotions.stored_onnx_sha256(name, version)
    except promotions.RecordError as exc:
        raise PromotionError(str(exc)) from None


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
    onnx_sha256: str  # hashed from the downloaded file: what the detector pins and verifies
    triton_sha256: str | None = None  # the same for the Triton repository, where it has one


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
        baseline = _champion_baseline(client, name, target_alias, champion, force)
        result = check_gate(version_metrics(challenger), baseline, gate)
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
    record = {
        "promotion.at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "promotion.alias": target_alias,
        "promotion.previous": str(champion.version) if champion is not None else "",
        "promotion.gate": "passed" if result.passed else "failed: " + "; ".join(result.failures),
    }
    if force:
        record["promotion.forced_reason"] = reason
    try:
        number = str(challenger.version)
        digest, triton = promotions.verified_digests(client, name, number)
        metrics = version_metrics(challenger)
        promoted = promotions.PromotionRecord(name, target_alias, number, digest, metrics, triton)
        details = {key.removeprefix("promotion."): value for key, value in record.items()}
        promotions.write_record(client, promoted, details)
    except promotions.RecordError as exc:
        raise PromotionError(str(exc)) from None
    client.set_registered_model_alias(name, target_alias, challenger.version)
    for key, value in record.items():
        client.set_model_version_tag(name, challenger.version, key, value[:5000])
    return Promotion(
        name,
        str(challenger.version),
        None if champion is None else str(champion.version),
        result,
        forced=force and not result.passed,
        onnx_sha256=digest,
        triton_sha256=triton,
    )


def _champion_baseline(client, name: str, alias: str, champion, force: bool) -> dict[str, float]:
    """The champion's metrics as recorded when it was promoted (its version tags are the
    pipeline's to rewrite); its tags only where no promotion was ever recorded. An alias that
    moved outside `oaml registry promote` stops the promotion unless forced."""
    record = promotions.last_record(client, name, alias)
    if record is None:
        return version_metrics(champion)
    if record.version == str(champion.version):
        return record.metrics
    if not force:
        raise PromotionError(
            f"{name}@{alias} points at version {champion.version}, but the last promotion "
            f"recorded version {record.version}: the alias was moved outside `oaml registry "
            "promote`; check who moved it, then promote with --force --reason"
        )
    return version_metrics(champion)  # forced past a moved alias: its own tags


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
