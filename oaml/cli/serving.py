"""`oaml serve` and `oaml score`: the detector online and in batch."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from oaml.cli.common import (
    app,
    friendly,
)
from oaml.serving.settings import ServeSettings


def serve(
    model: Annotated[str, typer.Option(help="ONNX file or models:/NAME@ALIAS (MLflow)")],
    name: Annotated[
        str | None, typer.Option(help="Served model name (default: file stem or NAME)")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8080,
    threshold: Annotated[
        float | None, typer.Option(help="Energy above which an input is OOD (default: calibrated)")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="onnxruntime threads (default: usable cores)")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, or auto / cuda to use a GPU")] = "cpu",
    model_sha256: Annotated[
        str | None,
        typer.Option(
            envvar="OAML_MODEL_SHA256",
            help="Serve only a model file of this SHA-256 (what `oaml registry promote` printed)",
        ),
    ] = None,
    **limits: Any,
) -> None:
    """Serve the detector: Open Inference Protocol v2, /v1/score, /metrics.

    Set OAML_SERVE_TOKEN in the environment to require 'Authorization: Bearer <token>'.
    """
    from oaml.serving.server import serve as run_server

    settings = ServeSettings.from_options(limits)
    run_server(
        model, host, port, name, threshold, settings, threads=threads, device=device,
        model_sha256=model_sha256,
    )  # fmt: skip


def _with_settings_options(command: Callable[..., None]) -> Callable[..., None]:
    """`command` taking, as keyword options, every ServeSettings field the command line sets
    (defined there once: default, unit, help)."""
    signature = inspect.signature(command, eval_str=True)
    fixed = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    derived = [
        inspect.Parameter(
            flag, inspect.Parameter.KEYWORD_ONLY, default=default,
            annotation=Annotated[type(default), typer.Option(help=text)],
        )
        for flag, default, text in ServeSettings.options()
    ]  # fmt: skip
    command.__signature__ = signature.replace(parameters=[*fixed, *derived])
    return command


app.command("serve")(friendly(_with_settings_options(serve)))


@app.command()
@friendly
def score(
    inputs: Annotated[list[Path], typer.Argument(help="Image files, folders or imglists (.txt)")],
    model: Annotated[Path, typer.Option(help="Exported detector (.onnx)")],
    out: Annotated[Path, typer.Option(help="Results file: .csv or .jsonl")],
    batch_size: Annotated[int, typer.Option(help="Images per onnxruntime call")] = 256,
    threshold: Annotated[
        float | None, typer.Option(help="Energy above which an input is OOD (default: calibrated)")
    ] = None,
    image_root: Annotated[
        Path | None,
        typer.Option(help="Folder imglist paths are relative to (default: the imglist's folder)"),
    ] = None,
) -> None:
    """Score image files offline, as the server would, into CSV or JSON Lines."""
    from oaml.serving.batch_score import score_images
    from oaml.serving.detector import Detector

    detector = Detector(model, threshold=threshold)
    summary = score_images(detector, inputs, out, batch_size, image_root)
    typer.echo(
        f"{summary.images} images scored ({summary.ood} OOD), {summary.errors} unreadable; "
        f"results: {summary.out}"
    )
