"""`oaml serve`: run the detector's HTTP app under uvicorn, with graceful shutdown.

On SIGTERM uvicorn stops accepting connections, lets in-flight requests finish (up to
`graceful_seconds`), then the app's lifespan drains the micro-batcher.
"""

from __future__ import annotations

import os
from dataclasses import replace

from oaml.serving.app import ServeSettings, create_app
from oaml.serving.connections import guarded_protocol
from oaml.serving.detector import Detector
from oaml.serving.guard import check_token
from oaml.serving.model_source import resolve_model

TOKEN_ENV = "OAML_SERVE_TOKEN"


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    name: str | None = None,
    threshold: float | None = None,
    settings: ServeSettings | None = None,
    threads: int | None = None,
    device: str = "cpu",
    graceful_seconds: float = 30.0,
    log_level: str = "info",
    model_sha256: str | None = None,
) -> None:
    """Load `model` (file or models:/NAME@ALIAS; with `model_sha256`, only a file of that
    digest) and serve it until interrupted."""
    import uvicorn

    source = resolve_model(model, sha256=model_sha256)
    # The event loop parses requests on the cores onnxruntime uses: its idle threads sleep.
    detector = Detector(
        source.path, threshold=threshold, threads=threads, device=device, spinning=False
    )
    settings = replace(
        settings or ServeSettings(),
        name=name or source.name,
        version=source.version,
        token=check_token(os.environ.get(TOKEN_ENV), TOKEN_ENV),
    )
    app = create_app(detector, settings)
    print(
        f"serving {source.path} as {settings.name!r} (version {settings.version}) on "
        f"http://{host}:{port}; providers {detector.session.get_providers()}; "
        f"auth {'on' if settings.token else 'off'}",
        flush=True,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=guarded_protocol(settings.max_head_bytes, settings.head_timeout_s),
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=graceful_seconds,
        limit_concurrency=settings.max_connections,
        proxy_headers=False,  # the client address is never used: no per-request header scan
        lifespan="on",
    )
