"""Where the served model comes from: an ONNX file, or `models:/NAME@ALIAS` in MLflow's registry.

The registry form downloads the version's artifacts once (MLFLOW_TRACKING_URI and, for S3
artifacts, MLFLOW_S3_ENDPOINT_URL and AWS credentials come from the environment).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from oaml.contract import ONNX_SHA256_TAG, TRITON_REPO_TAG, main_onnx
from oaml.io import checked_sha256, sha256_file, tree_sha256
from oaml.serving.detector import DetectorError

REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class ModelSource:
    path: Path
    name: str  # a sensible default for the served model name
    version: str


def resolve_model(
    reference: str, download_dir: str | Path | None = None, sha256: str | None = None
) -> ModelSource:
    """An ONNX file path, or a registry URI downloaded to `download_dir` (a temp dir if None).
    With `sha256` (the digest `oaml registry promote` printed), the file must have it."""
    source = _resolve(reference, download_dir)
    if sha256 is not None:
        verify_pinned_sha256(source.path, sha256, reference)
    return source


def verify_pinned_sha256(path: Path, expected: str, reference: str) -> None:
    """Refuse a model file whose SHA-256 is not the pinned one (fail closed: a malformed pin is
    an error too, never "no check")."""
    try:
        expected = checked_sha256(expected, "--model-sha256 (MODEL_SHA256)")
    except ValueError as exc:
        raise DetectorError(str(exc)) from None
    actual = sha256_file(path)
    if actual != expected:
        raise DetectorError(
            f"{reference}: {path.name} has SHA-256 {actual}, not the pinned {expected}; "
            "refusing to serve it (the artifact changed after promotion, or the pin names "
            "another version)"
        )


def _resolve(reference: str, download_dir: str | Path | None) -> ModelSource:
    match = REGISTRY_URI.match(reference)
    if not match:
        if reference.startswith("models:/"):
            raise DetectorError(
                f"{reference!r} is not a registry URI: use models:/NAME@ALIAS or "
                "models:/NAME/VERSION"
            )
        path = Path(reference).expanduser()
        if not path.is_file():
            raise DetectorError(f"model file {path} does not exist")
        return ModelSource(path, path.stem, "1")
    import mlflow
    from mlflow.exceptions import MlflowException

    name, alias, version = match["name"], match["alias"], match["version"]
    client = mlflow.MlflowClient()
    try:
        found = (
            client.get_model_version_by_alias(name, alias)
            if alias
            else client.get_model_version(name, version)
        )
        target = Path(download_dir or tempfile.mkdtemp(prefix="oaml-model-"))
        # By the resolved version, so an alias moved meanwhile cannot mix two versions.
        pinned = f"models:/{name}/{found.version}"
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=pinned, dst_path=str(target)))
    except MlflowException as exc:
        raise DetectorError(
            f"cannot load {reference} from MLflow at {mlflow.get_tracking_uri()}: {exc.message}"
        ) from None
    path = main_onnx(sorted(local.rglob("*.onnx")) if local.is_dir() else [local])
    if path is None:
        raise DetectorError(f"{reference} (version {found.version}) holds no .onnx file")
    _verify_sha256(path, found, reference)
    return ModelSource(path, name, str(found.version))


def _verify_sha256(path: Path, version, reference: str) -> None:
    """Refuse a downloaded file whose SHA-256 is not the one tagged at registration."""
    expected = version.tags.get(ONNX_SHA256_TAG)
    if not expected:
        raise DetectorError(
            f"{reference} (version {version.version}) has no {ONNX_SHA256_TAG} tag to verify "
            "its file against: register it again with this oaml (`oaml pipeline run` or the "
            "register stage) before serving it"
        )
    actual = sha256_file(path)
    if actual != expected:
        raise DetectorError(
            f"{reference} (version {version.version}): {path.name} has SHA-256 {actual}, not "
            f"the registered {expected}; the artifact changed after registration, refusing it"
        )


def fetch_triton_repository(
    reference: str, out: str | Path, sha256: str, tracking_uri: str | None = None
) -> Path:
    """Download the Triton model repository of a pinned version (`models:/NAME/VERSION`) into
    `out` and verify its tree digest before anything appears there: Triton then loads exactly
    what was promoted, and reads no bucket (MLflow proxies the artifacts). The pin is checked
    before MLflow is asked (`tracking_uri`, else MLflow's own default from the environment)."""
    import shutil

    import mlflow

    match = REGISTRY_URI.match(reference)
    if not match or not match["version"]:
        raise DetectorError(
            f"{reference!r}: give the pinned version, models:/NAME/VERSION (an alias can move)"
        )
    try:
        expected = checked_sha256(sha256, "--sha256 (TRITON_SHA256)")
    except ValueError as exc:
        raise DetectorError(str(exc)) from None
    from mlflow.exceptions import MlflowException

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        version = mlflow.MlflowClient().get_model_version(match["name"], match["version"])
    except MlflowException as exc:
        raise DetectorError(
            f"cannot read {reference} from MLflow at {mlflow.get_tracking_uri()}: {exc.message}"
        ) from None
    folder = version.tags.get(TRITON_REPO_TAG)
    if not folder:
        raise DetectorError(f"{reference} was registered without a Triton repository")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=out))
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                run_id=version.run_id, artifact_path=folder, dst_path=str(incoming)
            )
        )
        actual = tree_sha256(local)
        if actual != expected:
            raise DetectorError(
                f"{reference}: its Triton repository has digest {actual}, not the pinned "
                f"{expected}; refusing it (changed after promotion, or the pin names another "
                "version)"
            )
        # `out` may be a mount point (an emptyDir): its entries move in, not `out` itself.
        for entry in sorted(local.iterdir()):
            if (out / entry.name).exists():  # a restarted init container: replace its copy
                shutil.rmtree(out / entry.name)
            entry.rename(out / entry.name)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    return out
