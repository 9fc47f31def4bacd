"""MLflow runs of a pipeline: one parent run per pipeline run, one child run per stage.

Stages run in separate processes (Kubeflow pods, or kfp.local subprocesses), so the parent run is
created by the pipeline's first step and its id travels to every stage as a parameter.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oaml.tracking.store import experiment_id, resolve_tracking_uri

STAGE_TAG = "oaml.stage"
KFP_RUN_TAG = "kfp.run_id"
PARENT_TAG = "oaml.pipeline_run"


@dataclass(frozen=True)
class Tracking:
    """Where a stage reports: the store, the pipeline's parent run and the Kubeflow run id."""

    tracking_uri: str
    parent_run_id: str = ""
    kfp_run_id: str = ""

    @classmethod
    def resolve(cls, tracking_uri: str = "", parent_run_id: str = "", kfp_run_id: str = ""):
        return cls(resolve_tracking_uri(tracking_uri or None), parent_run_id, kfp_run_id)


def git_commit(folder: str | Path | None = None) -> str:
    """The project's commit: OAML_GIT_COMMIT (set in images), else `git rev-parse`, else ''."""
    if os.environ.get("OAML_GIT_COMMIT"):
        return os.environ["OAML_GIT_COMMIT"]
    where = Path(folder) if folder else Path(__file__).resolve().parents[2]
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def open_pipeline_run(tracking: Tracking, name: str, tags: dict[str, str]) -> str:
    """Create the pipeline's parent run (left RUNNING for the stages) and return its id."""
    import mlflow

    client = mlflow.MlflowClient(tracking.tracking_uri)
    run = client.create_run(
        experiment_id(tracking.tracking_uri),
        run_name=name,
        tags={
            KFP_RUN_TAG: tracking.kfp_run_id,
            PARENT_TAG: "true",
            "oaml.git_commit": git_commit(),
            **{k: str(v) for k, v in tags.items()},
        },
    )
    return run.info.run_id


def close_pipeline_run(tracking: Tracking, status: str = "FINISHED") -> None:
    """Mark the parent run FINISHED (or FAILED) once the pipeline is done: the one named by
    `parent_run_id`, else the one tagged with the Kubeflow run id (none opened: nothing to do)."""
    import mlflow

    client = mlflow.MlflowClient(tracking.tracking_uri)
    run_ids = [tracking.parent_run_id] if tracking.parent_run_id else []
    if not run_ids and tracking.kfp_run_id:
        found = client.search_runs(
            [experiment_id(tracking.tracking_uri)],
            filter_string=f"tags.`{KFP_RUN_TAG}` = '{tracking.kfp_run_id}' and "
            f"tags.`{PARENT_TAG}` = 'true'",
        )
        run_ids = [r.info.run_id for r in found]
    for run_id in run_ids:
        client.set_terminated(run_id, status)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: nested configs and metrics as MLflow keys."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class StageRun:
    """The child run of one stage: thin helpers over MLflow's fluent API."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def params(self, values: dict[str, Any]) -> None:
        import mlflow

        # MLflow caps a parameter value at 6000 characters; configs stay far below that.
        flat = {k: ("" if v is None else str(v))[:6000] for k, v in flatten(values).items()}
        mlflow.log_params(flat)

    def metrics(self, values: dict[str, Any], step: int | None = None) -> None:
        import mlflow

        numbers = {
            k: float(v)
            for k, v in flatten(values).items()
            if isinstance(v, int | float) and not isinstance(v, bool) and v == v
        }
        if numbers:
            mlflow.log_metrics(numbers, step=step)

    def artifact(self, path: str | Path, folder: str | None = None) -> None:
        import mlflow

        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=folder)
        elif path.is_file():
            mlflow.log_artifact(str(path), artifact_path=folder)

    def dataset(self, name: str, source: str, digest: str, context: str) -> None:
        """Record a dataset input with its hash (the data manifest's, or the files')."""
        import mlflow
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        with warnings.catch_warnings():
            # A local path matches several source kinds equally well; any of them records it.
            warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
            resolved = resolve_dataset_source(source)
        dataset = MetaDataset(source=resolved, name=name, digest=digest[:36])
        mlflow.log_input(dataset, context=context, tags={"sha256": digest})

    def tags(self, values: dict[str, Any]) -> None:
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in values.items()})

    def history(self, rows: list[dict[str, Any]]) -> None:
        """Log a finished training's per-epoch rows (the checkpoint's history), one step each."""
        for row in rows:
            self.metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

    def epoch_callback(self) -> Callable[[Any], None]:
        """A training-engine callback logging each epoch's loss terms, accuracy, speed, lr."""

        def log_epoch(log: Any) -> None:
            values = {f"train_{k}": v for k, v in log.train.items()}
            values.update(images_per_second=log.images_per_second, lr=log.lr)
            if log.val_accuracy is not None:
                values["val_accuracy"] = log.val_accuracy
            self.metrics(values, step=log.epoch)

        return log_epoch


@contextmanager
def stage_run(tracking: Tracking, stage: str, system_metrics: bool = True) -> Iterator[StageRun]:
    """A child run named `stage` under the pipeline's parent run (a top-level run without one),
    with system metrics sampled while the stage works; FAILED if the stage raises."""
    import mlflow

    from oaml.process import freeze_gc_at_exit

    freeze_gc_at_exit()  # a pipeline stage is a process of its own
    mlflow.set_tracking_uri(tracking.tracking_uri)
    tags = {STAGE_TAG: stage, KFP_RUN_TAG: tracking.kfp_run_id}
    with mlflow.start_run(
        experiment_id=experiment_id(tracking.tracking_uri),
        run_name=stage,
        parent_run_id=tracking.parent_run_id or None,
        tags=tags,
        log_system_metrics=system_metrics,
    ) as run:
        yield StageRun(run.info.run_id)


def last_run_id() -> str:
    """The id of the run this process tracked last (a component hands it on to later stages)."""
    import mlflow

    run = mlflow.last_active_run()
    return run.info.run_id if run else ""


def adopt_runs(tracking: Tracking, run_ids: list[str]) -> None:
    """Nest the runs of cacheable stages under this pipeline's parent run. Such stages take no
    run ids (that would defeat Kubeflow's cache), so they start top-level; a run that already
    belongs to the pipeline run that computed it stays there and is listed as reused."""
    import mlflow

    client = mlflow.MlflowClient(tracking.tracking_uri)
    reused = []
    for run_id in filter(None, run_ids):
        run = client.get_run(run_id)
        if "mlflow.parentRunId" in run.data.tags:
            if run.data.tags["mlflow.parentRunId"] != tracking.parent_run_id:
                reused.append(run_id)
            continue
        client.set_tag(run_id, "mlflow.parentRunId", tracking.parent_run_id)
        client.set_tag(run_id, KFP_RUN_TAG, tracking.kfp_run_id)
    if reused and tracking.parent_run_id:
        client.set_tag(tracking.parent_run_id, "oaml.reused_runs", ",".join(reused))


def stage_seconds(tracking_uri: str, parent_run_id: str) -> dict[str, float]:
    """Wall seconds of each stage run nested under a pipeline run (from MLflow's run times)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    children = client.search_runs(
        [experiment_id(tracking_uri)],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
    )
    return {
        r.data.tags.get(STAGE_TAG, r.info.run_name): (r.info.end_time - r.info.start_time) / 1000
        for r in children
        if r.info.end_time
    }
