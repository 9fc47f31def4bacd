"""The HTTP app: Open Inference Protocol v2, `/v1/score` for image files, Prometheus metrics.

Handlers read raw requests (no pydantic models on the hot path) and every error is answered as
{"error": message} with a 4xx status, the OIP error shape, so a bad request never takes the server
down. Model work goes through one MicroBatcher, so concurrent requests share onnxruntime calls.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI, Response
from starlette.exceptions import HTTPException

from oaml import __version__
from oaml.serving.detector import Detector
from oaml.serving.guard import limit_body, require_token
from oaml.serving.images import ImageInputError
from oaml.serving.oip import OipError
from oaml.serving.routes import add_infer_routes, add_score_route
from oaml.serving.service import SERVE_MAX_PIXELS, DetectorService, ServeSettings

__all__ = ["SERVE_MAX_PIXELS", "DetectorService", "ServeSettings", "create_app"]
log = logging.getLogger("oaml.serving")


def _json(payload, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


def create_app(detector: Detector, settings: ServeSettings):
    """The ASGI app serving `detector`: FastAPI routes inside metrics, body-limit, auth guards."""
    service = DetectorService(detector, settings)

    @asynccontextmanager
    async def lifespan(_app):
        await service.batcher.start()
        service.ready = True
        yield
        service.ready = False
        await service.batcher.stop()  # requests already queued are answered first

    app = FastAPI(title="oaml detector", version=__version__, lifespan=lifespan, docs_url=None)
    _add_error_handlers(app)
    _add_health_routes(app, service)
    fast_path = add_infer_routes(app, service)
    add_score_route(app, service)
    # Auth outermost: an unauthenticated body is refused before it is read.
    guarded = require_token(limit_body(fast_path(app), settings.body_limits()), settings.token)
    return service.metrics.middleware(guarded)


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as {"error": message}: 4xx for bad requests, 500 (details logged) otherwise."""

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        return _error(str(exc.detail), exc.status_code)

    @app.exception_handler(OipError)
    async def oip_error(_request, exc: OipError):
        response = _error(str(exc), exc.status)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(ImageInputError)
    async def image_error(_request, exc: ImageInputError):
        return _error(str(exc), 400)

    @app.exception_handler(Exception)
    async def unexpected_error(_request, exc: Exception):
        # Still JSON, still the OIP error shape; the details go to the log, not the client.
        log.exception("unexpected error while serving a request")
        return _error(f"internal error ({type(exc).__name__}); see the server log", 500)


def _add_health_routes(app: FastAPI, service: DetectorService) -> None:
    """Liveness, readiness, server and model metadata, Prometheus metrics."""

    @app.get("/v2/health/live")
    async def live():
        return _json({"live": service.live}, 200 if service.live else 503)

    @app.get("/v2/health/ready")
    async def ready():
        is_ready = await service.check_ready()
        return _json({"ready": is_ready}, 200 if is_ready else 503)

    @app.get("/v2")
    async def server_metadata():
        return _json({"name": "oaml", "version": __version__, "extensions": ["binary_tensor_data"]})

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def metadata(name: str, version: str | None = None):
        service.check_model(name, version)
        return _json(service.model_metadata())

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None):
        service.check_model(name, version)
        is_ready = await service.check_ready()
        return _json({"name": name, "ready": is_ready}, 200 if is_ready else 503)

    @app.get("/metrics")
    async def prometheus():
        return Response(service.metrics.render(), media_type=service.metrics.content_type)
