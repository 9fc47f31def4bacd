"""Session-wide real services for the tracking tests (started only when a test asks)."""

from __future__ import annotations

import pytest

from tests.tracking import services


@pytest.fixture(scope="session")
def tracking_server(postgres_uri, s3_store, tmp_path_factory):
    """An `mlflow server` backed by PostgreSQL and SeaweedFS S3; yields its URL."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    with services.mlflow_server(postgres_uri, s3_store, folder) as url:
        yield url
