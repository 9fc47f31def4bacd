"""Compile the pipeline to Kubeflow's IR YAML, submit it to a Kubeflow Pipelines endpoint, or run
the very same pipeline on this machine with kfp.local's subprocess runner."""

from __future__ import annotations

import json
import re
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from components import DEFAULT_IMAGE
from pipelines.oaml_pipeline import build_pipeline, oaml_pipeline

ANSI = re.compile(r"\x1b\[[0-9;]*m")
DEFAULT_MODEL = oaml_pipeline.component_spec.inputs["registered_model"].default
# Parameters a user may pass with --param, from the pipeline's signature (typed: all strings).
PARAMETERS = tuple(oaml_pipeline.component_spec.inputs or {})


def parse_params(items: list[str]) -> dict[str, str]:
    """`key=value` pipeline arguments; an unknown key is an error naming the known ones."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {item!r} must look like key=value")
        if key not in PARAMETERS:
            raise ValueError(f"unknown pipeline parameter {key!r}; known: {', '.join(PARAMETERS)}")
        params[key] = value
    return params


def compile_pipeline(out: str | Path, trainjob_launchers: bool = False) -> Path:
    """Write the pipeline's IR YAML (what Kubeflow Pipelines runs) to `out`, atomically.
    `trainjob_launchers`: the variant for multi-node training (TrainJobs do the GPU work)."""
    from kfp import compiler

    from oaml.io import atomic_path

    out = Path(out)
    with atomic_path(out) as tmp:
        tmp_yaml = tmp.with_suffix(".yaml")
        pipeline = build_pipeline(trainjob_launchers=True) if trainjob_launchers else oaml_pipeline
        compiler.Compiler().compile(pipeline, str(tmp_yaml))
        tmp_yaml.replace(tmp)
    return out


def submit(
    host: str,
    params: dict[str, str],
    experiment: str = "oaml",
    run_name: str | None = None,
    namespace: str | None = None,
    service_account: str | None = None,
    cache: bool = True,
) -> dict[str, str]:
    """Submit the compiled pipeline through kfp.Client; returns the run id and its URL.
    `cache=False` runs every step again (KFP caches a step on its parameters and inputs, so a
    changed folder behind the same `import_from` is re-imported only that way).
    Credentials: kfp.Client's own (KF_PIPELINES_SA_TOKEN_PATH, or an existing kube config)."""
    import kfp
    from urllib3.exceptions import HTTPError

    try:
        client = kfp.Client(host=host, namespace=namespace)
    except HTTPError as exc:
        raise ConnectionError(
            f"no Kubeflow Pipelines API answers at {host} ({type(exc).__name__}): check --host "
            "(e.g. a port-forward to ml-pipeline-ui, http://localhost:8080) and your credentials"
        ) from None
    run = client.create_run_from_pipeline_func(
        oaml_pipeline,
        arguments=params,
        run_name=run_name or f"oaml-{time.strftime('%Y%m%d-%H%M%S')}",
        experiment_name=experiment,
        namespace=namespace,
        service_account=service_account,
        enable_caching=None if cache else False,
    )
    return {"run_id": run.run_id, "url": f"{host.rstrip('/')}/#/runs/details/{run.run_id}"}


RUNNERS = ("subprocess", "docker")


def run_local(
    out: str | Path,
    params: dict[str, str],
    tracking_uri: str | None = None,
    runner: str = "subprocess",
    image: str | None = None,
) -> dict:
    """Run the whole pipeline here with kfp.local: one subprocess per stage in this Python
    (`runner="subprocess"`), or one container per stage in the project image (`"docker"`, any
    Docker-compatible engine at DOCKER_HOST; pipelines/containers.py).

    Artifacts land under OUT/pipeline_root, resumable stage folders under OUT/work, data under
    OUT/data unless `data_root` is given; tracking goes to `tracking_uri`, MLFLOW_TRACKING_URI or
    the embedded store. Returns where everything is (the demo's summary.json without metrics).
    """
    import kfp.local

    if runner not in RUNNERS:
        raise ValueError(f"--runner must be one of {', '.join(RUNNERS)}, got {runner!r}")

    from oaml.tracking.runs import stage_seconds
    from oaml.tracking.store import resolve_tracking_uri

    out = Path(out).expanduser().resolve()
    arguments: dict[str, Any] = {
        "data_root": str(out / "data"),
        "work_dir": str(out / "work"),
        "device": "auto",
        **params,
        "tracking_uri": resolve_tracking_uri(tracking_uri or params.get("tracking_uri")),
    }
    root = out / "pipeline_root"
    pipeline, isolation = oaml_pipeline, nullcontext()
    if runner == "docker":
        from pipelines import containers

        image = image or params.get("image") or DEFAULT_IMAGE
        containers.require_image(containers.engine_client(), image)
        arguments["image"] = image
        pipeline, isolation = build_pipeline(image), containers.stage_containers()
        kfp_runner = containers.docker_runner(out, arguments, root)
    else:
        kfp_runner = kfp.local.SubprocessRunner(use_venv=False)
    kfp.local.init(runner=kfp_runner, pipeline_root=str(root), raise_on_error=True)
    started = time.perf_counter()
    with warnings.catch_warnings(), isolation:
        # The project image has no "python" in its name; locally this interpreter runs stages.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        try:
            pipeline(**arguments)
        except RuntimeError as exc:
            # kfp.local names the innermost failed task first, after "Inner task failed:".
            inner = ANSI.sub("", str(exc)).partition("Inner task failed:")[2]
            failed = re.findall(r"'([^']+)'", inner)
            raise ChildProcessError(
                f"the local pipeline failed in stage {failed[0] if failed else '?'} (its log is "
                f"above); finished stages are kept in {arguments['work_dir']} and a re-run "
                "resumes from them"
            ) from None
    seconds = time.perf_counter() - started
    outputs = _local_outputs(root)
    stages = stage_seconds(arguments["tracking_uri"], outputs["parent_run_id"])
    return {
        **outputs,
        "registered_model": arguments.get("registered_model", DEFAULT_MODEL),
        "tracking_uri": arguments["tracking_uri"],
        "data_root": arguments["data_root"],
        "image": arguments.get("image"),
        "seconds": round(seconds, 1),
        "stage_seconds": {k: round(v, 1) for k, v in sorted(stages.items())},
        # Process start-up, imports and artifact hand-over: wall time not spent in any stage.
        "orchestration_seconds": round(seconds - sum(stages.values()), 1),
    }


def _local_outputs(root: Path) -> dict[str, Any]:
    """The newest local run's outputs, read from kfp.local's layout:
    pipeline_root/<pipeline>-<timestamp>/<task>/<output> (executor_output.json per task)."""
    runs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise RuntimeError(f"the local pipeline run left no outputs under {root}")
    run = runs[-1]
    registration = json.loads((run / "register" / "executor_output.json").read_text())
    values = registration.get("parameterValues", {})
    return {
        "run_dir": str(run),
        **{k: values.get(k) for k in ("version", "alias", "model_uri", "parent_run_id")},
        "checkpoint": str(run / "train-student" / "student" / "checkpoint.pt"),
        "onnx": str(run / "export-onnx" / "detector" / "detector.onnx"),
        "evaluation": str(run / "evaluate" / "evaluation"),
    }
