"""A registered version's Triton model repository: logged with the version, found again as the
storage URI KServe's Triton runtime reads (k8s/kserve-triton)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from oaml.tracking.registry import PromotionError, _by_alias, _client

TRITON_REPO_TAG = "triton_repo"  # the run artifact path of the version's Triton repository
TRITON_ARTIFACT_PATH = "triton"


def log_triton_repo(repo: str | Path) -> dict[str, str]:
    """Log the repository folder to the active run; the version tags that point at it."""
    import mlflow

    mlflow.log_artifacts(str(repo), TRITON_ARTIFACT_PATH)
    return {TRITON_REPO_TAG: TRITON_ARTIFACT_PATH}


def triton_storage_uri(
    name: str, alias: str, artifacts_destination: str | None, tracking_uri: str | None = None
) -> str:
    """Where the Triton repository of `name@alias` is stored: the run's artifact URI, with a
    proxied `mlflow-artifacts:/` URI mapped onto the server's `--artifacts-destination`."""
    client = _client(tracking_uri)
    version = _by_alias(client, name, alias)
    if version is None:
        raise PromotionError(f"{name} has no alias {alias!r}: nothing to deploy")
    path = version.tags.get(TRITON_REPO_TAG)
    if not path:
        raise PromotionError(
            f"{name} version {version.version} was registered without a Triton repository "
            "(registered before it was added): register it again"
        )
    uri = f"{client.get_run(version.run_id).info.artifact_uri.rstrip('/')}/{path}"
    if uri.startswith("mlflow-artifacts:"):
        if not artifacts_destination:
            raise PromotionError(
                f"the repository is at {uri}, proxied by the MLflow server: pass the server's "
                "--artifacts-destination (e.g. s3://oaml-mlflow) to get the storage URI"
            )
        relative = urlparse(uri).path.lstrip("/")  # without a host part, if the URI has one
        uri = f"{artifacts_destination.rstrip('/')}/{relative}"
    return uri
