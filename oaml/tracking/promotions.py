"""Promotion records: what `oaml registry promote` checked and moved, kept where the pipeline
cannot write.

Version tags (the gated metrics, the ONNX file's SHA-256) are written by the pipeline's user,
which owns the registered model and could rewrite them. A promotion therefore hashes the file
itself and writes one run per promotion into the experiment `oaml-promotions`: created by the
admin, writable only by the promoter (`oaml registry ensure-users --promoter`), readable by all.
The gate compares a challenger with the champion's metrics as recorded when it was promoted,
and the digest a promotion prints is what the detector verifies at load (`--model-sha256`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oaml.contract import ONNX_SHA256_TAG, main_onnx
from oaml.io import sha256_file

PROMOTIONS_EXPERIMENT = "oaml-promotions"
METRIC_PARAM = "metric."


class RecordError(RuntimeError):
    """A promotion record could not be read or written: nothing is promoted."""


@dataclass(frozen=True)
class PromotionRecord:
    """One promotion as the promoter wrote it."""

    name: str
    alias: str
    version: str
    onnx_sha256: str
    metrics: dict[str, float]
    triton_sha256: str | None = None  # the Triton repository's tree digest, where it has one


def stored_onnx_sha256(name: str, version: str) -> str:
    """SHA-256 of the version's ONNX file as the registry stores it and a server downloads it
    (MLflow re-serialises the model: the stored bytes, not the exported file's, are what
    registration tags and promotion checks)."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="oaml-onnx-") as folder:
        local = Path(
            mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=folder)
        )
        path = main_onnx(sorted(local.rglob("*.onnx")) if local.is_dir() else [local])
        if path is None:
            raise RecordError(f"{name} version {version} was logged without an .onnx file")
        return sha256_file(path)


def downloaded_sha256(client, name: str, version: str) -> str:
    """The stored ONNX file's SHA-256, checked against the tag registration wrote (a file
    rewritten after registration is refused)."""
    actual = stored_onnx_sha256(name, version)
    tagged = client.get_model_version(name, version).tags.get(ONNX_SHA256_TAG)
    if actual != tagged:
        raise RecordError(
            f"{name} version {version}: its ONNX file has SHA-256 {actual}, but registration "
            f"tagged {tagged}; the artifact or the tag changed after registration, so it is not "
            "promoted (register it again with `oaml pipeline run`)"
        )
    return actual


def verified_digests(client, name: str, version: str) -> tuple[str, str | None]:
    """The ONNX file's SHA-256 and the Triton repository's tree digest (None without one), each
    computed from a download and checked against registration's tags."""
    from oaml.tracking.triton_repo import downloaded_triton_sha256

    onnx = downloaded_sha256(client, name, version)
    try:
        triton = downloaded_triton_sha256(client, client.get_model_version(name, version))
    except ValueError as exc:
        raise RecordError(f"{exc}; it is not promoted") from None
    return onnx, triton


def experiment_id(client, create: bool) -> str | None:
    """The id of the promotion records' experiment (created if `create`), else None."""
    found = client.get_experiment_by_name(PROMOTIONS_EXPERIMENT)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(PROMOTIONS_EXPERIMENT) if create else None


def last_record(client, name: str, alias: str) -> PromotionRecord | None:
    """The newest promotion of `name` to `alias`, or None if it was never promoted here."""
    experiment = experiment_id(client, create=False)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment],
        filter_string=f"tags.`oaml.model` = '{name}' and tags.`oaml.alias` = '{alias}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    params = runs[0].data.params
    metrics = {
        key.removeprefix(METRIC_PARAM): float(value)
        for key, value in params.items()
        if key.startswith(METRIC_PARAM)
    }
    return PromotionRecord(
        name, alias, params["version"], params["onnx_sha256"], metrics, params.get("triton_sha256")
    )


def write_record(client, record: PromotionRecord, details: dict[str, Any]) -> str:
    """Log the promotion as a finished run of `oaml-promotions` (params cannot be changed once
    logged); returns its run id. A promoter without write access gets a RecordError."""
    from mlflow.exceptions import MlflowException

    try:
        experiment = experiment_id(client, create=True)
        tags = {"oaml.model": record.name, "oaml.alias": record.alias}
        tags.update({f"oaml.{k}": str(v)[:5000] for k, v in details.items()})
        run = client.create_run(experiment, tags=tags, run_name=f"{record.name} v{record.version}")
        params = {"version": record.version, "onnx_sha256": record.onnx_sha256}
        if record.triton_sha256:
            params["triton_sha256"] = record.triton_sha256
        params.update({f"{METRIC_PARAM}{k}": repr(float(v)) for k, v in record.metrics.items()})
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id)
    except MlflowException as exc:
        raise RecordError(
            f"cannot write the promotion record to experiment {PROMOTIONS_EXPERIMENT!r} "
            f"({exc.error_code}: {exc.message}): promote as the promoter user "
            "(`oaml registry ensure-users --promoter`); nothing was promoted"
        ) from None
    return run.info.run_id
