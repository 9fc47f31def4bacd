"""Which MLflow store a run talks to: a relative sqlite URI names one database for every stage."""

from pathlib import Path

from oaml.tracking.store import artifact_location, resolve_tracking_uri


def test_a_relative_sqlite_uri_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = resolve_tracking_uri("sqlite:///runs/store.db")
    assert uri == f"sqlite:///{tmp_path / 'runs' / 'store.db'}"
    # The experiment's artifacts sit beside that database, as a file URI.
    assert (
        artifact_location("sqlite:///runs/store.db") == (tmp_path / "runs" / "artifacts").as_uri()
    )


def test_absolute_and_server_uris_are_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    absolute = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_tracking_uri(absolute) == absolute
    assert resolve_tracking_uri("http://mlflow:5000") == "http://mlflow:5000"
    assert artifact_location("http://mlflow:5000") is None
    # Nothing given: the embedded store under the folder, created.
    assert (
        resolve_tracking_uri(None, tmp_path / "store")
        == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    )
    assert Path(tmp_path / "store").is_dir()
