"""Which MLflow store a run talks to: the environment's server, or the embedded default.

The embedded default is a sqlite database with local artifacts under the project folder, so a
laptop run needs no server. Production sets MLFLOW_TRACKING_URI (an `mlflow server` with a
PostgreSQL backend and S3 artifacts; MLFLOW_S3_ENDPOINT_URL and AWS credentials for S3).
"""

from __future__ import annotations

import os
from pathlib import Path

EMBEDDED_DIR = Path("runs") / "mlflow"
EXPERIMENT = "oaml"


def embedded_uri(folder: str | Path = EMBEDDED_DIR) -> str:
    """The sqlite tracking URI of the embedded store in `folder` (absolute, so every process
    of a local pipeline run finds the same database whatever its working directory)."""
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def _sqlite_database(uri: str) -> Path | None:
    """The absolute path of a sqlite URI's database (a relative one is taken from here)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).expanduser().resolve()


def resolve_tracking_uri(explicit: str | None = None, folder: str | Path = EMBEDDED_DIR) -> str:
    """`explicit`, else MLFLOW_TRACKING_URI, else the embedded store in `folder`; a relative
    sqlite path is made absolute (every stage process must find the same database)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return embedded_uri(folder)
    database = _sqlite_database(uri)
    return f"sqlite:///{database}" if database else uri


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps artifacts: next to an embedded sqlite database; None (the
    server's choice, e.g. its --artifacts-destination) for a server."""
    database = _sqlite_database(tracking_uri)
    return (database.parent / "artifacts").as_uri() if database else None


def experiment_id(tracking_uri: str, name: str = EXPERIMENT) -> str:
    """The id of experiment `name`, created on first use."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(tracking_uri))
    except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel stage
        return client.get_experiment_by_name(name).experiment_id
