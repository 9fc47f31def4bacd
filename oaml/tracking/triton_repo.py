"""A registered version's Triton model repository: logged with the version and its tree digest,
downloaded and verified again at promotion (the Triton pods fetch it the same way,
oaml.serving.model_source.fetch_triton_repository)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from oaml.contract import TRITON_REPO_TAG, TRITON_SHA256_TAG
from oaml.io import tree_sha256

TRITON_ARTIFACT_PATH = "triton"


def log_triton_repo(repo: str | Path) -> dict[str, str]:
    """Log the repository folder to the active run; the version tags that point at it."""
    import mlflow

    mlflow.log_artifacts(str(repo), TRITON_ARTIFACT_PATH)
    return {TRITON_REPO_TAG: TRITON_ARTIFACT_PATH, TRITON_SHA256_TAG: tree_sha256(repo)}


def downloaded_triton_sha256(client, version) -> str | None:
    """The tree digest of `version`'s Triton repository as the pods will download it (None when
    it has none), or ValueError when it is not the digest registration tagged."""
    import mlflow

    folder = version.tags.get(TRITON_REPO_TAG)
    if not folder:
        return None
    with tempfile.TemporaryDirectory(prefix="oaml-promote-triton-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=version.run_id, artifact_path=folder, dst_path=tmp
        )
        actual = tree_sha256(local)
    tagged = version.tags.get(TRITON_SHA256_TAG)
    if tagged is not None and actual != tagged:
        raise ValueError(
            f"{version.name} version {version.version}: its Triton repository has digest "
            f"{actual}, but registration tagged {tagged}; it changed after registration"
        )
    return actual
