"""`oaml serve` and `oaml score`: the detector online and in batch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oaml.cli.common import (
    app,
    friendly,
)


@app.command()
@friendly
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
    max_batch: Annotated[int, typer.Option(help="Most images per onnxruntime call")] = 64,
    max_batch_mb: Annotated[
        float, typer.Option(help="Most MiB of images per onnxruntime call")
    ] = 64.0,
    max_wait_ms: Annotated[
        float, typer.Option(help="How long a batch waits for more requests")
    ] = 0.0,
    max_images: Annotated[int, typer.Option(help="Most images per request")] = 256,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body, MiB")] = 32.0,
    max_json_mb: Annotated[float, typer.Option(help="Largest JSON request body, MiB")] = 8.0,
    max_buffered_mb: Annotated[
        float, typer.Option(help="Most MiB of request bodies held at once; past it: 503")
    ] = 512.0,
    body_timeout: Annotated[
        float, typer.Option(help="Seconds to receive a whole request body; then 408")
    ] = 30.0,
    infer_timeout: Annotated[
        float, typer.Option(help="Seconds a queued request waits for the model; then 503")
    ] = 30.0,
    min_body_rate_kb: Annotated[
        float, typer.Option(help="KiB/s a body must average after its first 2 s; then 408 (0: off)")
    ] = 64.0,
    decode_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds one image may take to decode; then 400 (its process is stopped)"
        ),
    ] = 10.0,
    max_header_kb: Annotated[
        float, typer.Option(help="Largest request head (URL and headers), KiB; past it: 431")
    ] = 64.0,
    header_timeout: Annotated[
        float, typer.Option(help="Seconds to receive a request's head; then 408 and close")
    ] = 10.0,
    max_connections: Annotated[
        int, typer.Option(help="Most open connections and requests; past it: 503")
    ] = 512,
    max_pixels: Annotated[
        int, typer.Option(help="Most pixels (width x height) of one uploaded image")
    ] = 4096 * 4096,
    max_request_pixels: Annotated[
        int, typer.Option(help="Most pixels of all images of one /v1/score request")
    ] = 4 * 4096 * 4096,
    max_decode_mb: Annotated[
        float, typer.Option(help="Most MiB that image decodes may use at once (by image mode)")
    ] = 512.0,
    max_queue_mb: Annotated[
        float, typer.Option(help="Most MiB of images waiting for the model; past it: 503")
    ] = 256.0,
    threads: Annotated[
        int | None, typer.Option(help="onnxruntime threads (default: usable cores)")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, or auto / cuda to use a GPU")] = "cpu",
) -> None:
    """Serve the detector: Open Inference Protocol v2, /v1/score, /metrics.

    Set OAML_SERVE_TOKEN in the environment to require 'Authorization: Bearer <token>'.
    """
    from oaml.serving.app import ServeSettings
    from oaml.serving.server import serve as run_server

    settings = ServeSettings(
        max_batch=max_batch,
        max_batch_bytes=int(max_batch_mb * 1024 * 1024),
        max_wait_ms=max_wait_ms,
        max_images=max_images,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_json_bytes=int(max_json_mb * 1024 * 1024),
        max_buffered_bytes=int(max_buffered_mb * 1024 * 1024),
        body_timeout_s=body_timeout,
        min_body_rate=int(min_body_rate_kb * 1024),
        max_head_bytes=int(max_header_kb * 1024),
        head_timeout_s=header_timeout,
        infer_timeout_s=infer_timeout,
        max_connections=max_connections,
        max_pixels=max_pixels,
        max_request_pixels=max_request_pixels,
        max_queued_bytes=int(max_queue_mb * 1024 * 1024),
        max_decode_bytes=int(max_decode_mb * 1024 * 1024),
        decode_timeout_s=decode_timeout,
    )
    run_server(model, host, port, name, threshold, settings, threads=threads, device=device)


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
