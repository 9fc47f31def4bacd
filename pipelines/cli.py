"""`oaml pipeline` and `oaml demo`: the Kubeflow pipeline's commands, plugged into `oaml`.

They live beside the pipeline so that the library never imports kfp or pipelines/; the
`oaml.cli` entry point in pyproject.toml hands `register` the app.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Annotated

import typer

from oaml.cli.common import (
    OverridesOption,
    StudentMethodOption,
    TrackingOption,
    _check_method,
    friendly,
)

pipeline_app = typer.Typer(
    help="The Kubeflow pipeline: compile, submit, or run it here.", no_args_is_help=True
)


def _require_kfp() -> None:
    """A clear error where the Kubeflow Pipelines SDK (the `pipeline` extra) is missing."""
    if importlib.util.find_spec("kfp") is None:
        raise ValueError(
            "the pipeline commands need the Kubeflow Pipelines SDK: pip install 'oaml[pipeline]'"
        )


def register(app: typer.Typer) -> None:
    """Add `oaml demo` and the `oaml pipeline` group to the `oaml` app."""
    app.command("demo")(demo)
    app.add_typer(pipeline_app, name="pipeline")


@friendly
def demo(
    out: Annotated[Path, typer.Option(help="Output folder; summary.json is written here")] = Path(
        "runs/demo"
    ),
    data_root: Annotated[
        Path | None, typer.Option(help="Data folder (default: OUT/data, prepared if needed)")
    ] = None,
    preset: Annotated[str, typer.Option(help="Preset name or YAML path")] = "quick",
    set_: OverridesOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    method: StudentMethodOption = "oaml",
    tracking_uri: TrackingOption = None,
    registered_model: Annotated[str, typer.Option(help="Registered model name")] = (
        "oaml-detector"
    ),
    reproducible: Annotated[
        bool,
        typer.Option(
            help="Pin threads, CPU kernels and float32 so the numbers do not depend on the "
            "machine (about 1.6x slower training here)"
        ),
    ] = False,
    import_from: ImportFromOption = "",
    import_options: ImportOptionsOption = "{}",
) -> None:
    """Run the whole pipeline locally on the embedded default and write OUT/summary.json."""
    _require_kfp()
    from pipelines.demo import run_demo

    _check_method(method)
    run_demo(
        out, data_root, preset, set_ or [], device, method, tracking_uri, registered_model,
        reproducible=reproducible, import_from=import_from, import_options=import_options,
    )  # fmt: skip


@pipeline_app.command("compile")
@friendly
def pipeline_compile(
    out: Annotated[Path, typer.Option(help="IR YAML file to write")] = Path("oaml-pipeline.yaml"),
    trainjob_launchers: Annotated[
        bool,
        typer.Option(
            help="Multi-node variant: training steps launch Kubeflow TrainJobs (run it with "
            "num_nodes > 1) and request no GPU themselves"
        ),
    ] = False,
) -> None:
    """Write the pipeline's Kubeflow Pipelines IR YAML (upload it in the UI or submit it)."""
    _require_kfp()
    from pipelines.runner import compile_pipeline

    typer.echo(f"pipeline: {compile_pipeline(out, trainjob_launchers)}")


ImportFromOption = Annotated[
    str,
    typer.Option(
        "--import-from",
        help="Import this folder of class subfolders (or path,label CSV, or s3://BUCKET/PREFIX) "
        "first, as the benchmark that --set benchmark=NAME names",
    ),
]
ImportOptionsOption = Annotated[
    str,
    typer.Option(
        "--import-options",
        help='With --import-from: `oaml data import` options as JSON, e.g. {"holdout_classes": '
        '["cat"], "size": 64}',
    ),
]
ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", help="Pipeline parameter key=value (see `oaml pipeline params`)"),
]


@pipeline_app.command("params")
def pipeline_params() -> None:
    """List the pipeline's parameters and their defaults."""
    _require_kfp()
    from pipelines.oaml_pipeline import oaml_pipeline

    for name, spec in (oaml_pipeline.component_spec.inputs or {}).items():
        typer.echo(f"{name:18s} {spec.default!r:45s} {' '.join((spec.description or '').split())}")


@pipeline_app.command("submit")
@friendly
def pipeline_submit(
    host: Annotated[str, typer.Option(help="Kubeflow Pipelines API endpoint URL")],
    experiment: Annotated[str, typer.Option(help="Experiment name")] = "oaml",
    run_name: Annotated[str | None, typer.Option(help="Run name (default: oaml-TIME)")] = None,
    namespace: Annotated[str | None, typer.Option(help="Kubeflow profile namespace")] = None,
    service_account: Annotated[
        str | None, typer.Option(help="Kubernetes service account the run's pods use")
    ] = None,
    param: ParamOption = None,
    cache: Annotated[
        bool,
        typer.Option(help="Reuse cached steps (--no-cache: run every step again)"),
    ] = True,
) -> None:
    """Submit the pipeline to a Kubeflow Pipelines endpoint (kfp.Client) and print the run."""
    _require_kfp()
    from pipelines.runner import parse_params, submit

    params = parse_params(param or [])
    result = submit(host, params, experiment, run_name, namespace, service_account, cache)
    typer.echo(json.dumps(result))


@pipeline_app.command("run")
@friendly
def pipeline_run(
    local: Annotated[
        bool, typer.Option("--local", help="Run here with kfp.local (required: no cluster)")
    ] = False,
    out: Annotated[Path, typer.Option(help="Folder for artifacts and stage folders")] = Path(
        "runs/pipeline"
    ),
    preset: Annotated[str, typer.Option(help="Preset name or YAML path")] = "quick",
    data_root: Annotated[Path | None, typer.Option(help="Data folder (default: OUT/data)")] = None,
    set_: OverridesOption = None,
    method: StudentMethodOption = "oaml",
    tracking_uri: TrackingOption = None,
    registered_model: Annotated[str, typer.Option(help="Registered model name")] = (
        "oaml-detector"
    ),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    runner: Annotated[
        str,
        typer.Option(
            help="subprocess: every stage in this Python; docker: every stage in a container of "
            "the project image (an engine at DOCKER_HOST, e.g. podman system service)"
        ),
    ] = "subprocess",
    image: Annotated[
        str | None,
        typer.Option(help="Image for --runner docker (default: the pipeline's, `make images`)"),
    ] = None,
    work_dir: Annotated[
        Path | None,
        typer.Option(
            help="Stage folders (default: OUT/work): finished stages there are reused, e.g. "
            "to register an earlier run's models in another MLflow"
        ),
    ] = None,
    import_from: ImportFromOption = "",
    import_options: ImportOptionsOption = "{}",
) -> None:
    """Run the very same pipeline on this machine (kfp.local) and write OUT/summary.json."""
    _require_kfp()
    if not local:
        raise ValueError("give --local to run here, or use `oaml pipeline submit --host URL`")
    if image and runner != "docker":
        raise ValueError("--image needs --runner docker")
    from pipelines.demo import run_demo

    _check_method(method)
    run_demo(
        out, data_root, preset, set_ or [], device, method, tracking_uri, registered_model,
        runner=runner, image=image, work_dir=work_dir, import_from=import_from,
        import_options=import_options,
    )  # fmt: skip
