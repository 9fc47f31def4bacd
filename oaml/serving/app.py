"""The HTTP app: Open Inference Protocol v2, `/v1/score` for image files, Prometheus metrics.

Handlers read raw requests (no pydantic models on the hot path) and every error is answered as
{"error": message} with a 4xx status, the OIP error shape, so a bad request never takes the server
down. Model work goes through one MicroBatcher, so concurrent requests share onnxruntime calls.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from starlette.exceptions import HTTPException

from oaml import __version__
from oaml.serving.answers import error_response, json_response
from oaml.serving.detector import Detector
from oaml.serving.guard import limit_body, require_token
from oaml.serving.images import ImageInputError
from oaml.serving.oip import OipError
from oaml.serving.routes import add_infer_routes, add_score_route
from oaml.serving.service import DetectorService
from oaml.serving.settings import SERVE_MAX_PIXELS, ServeSettings

__all__ = ["SERVE_MAX_PIXELS", "DetectorService", "ServeSettings", "create_app"]


def create_app(detector: Detector, settings: ServeSettings):
    """The ASGI app serving `detector`: FastAPI routes inside metrics, body-limit, auth guards."""
    service = DetectorService(detector, settings)

    @asynccontextmanager
    async def lifespan(_app):
        await service.batcher.start()
        await service.decoders.start()
        service.ready = True
        yield
        service.ready = False
        await service.batcher.stop()  # requests already queued are answered first
        await service.decoders.stop()

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
        return json_response({"error": str(exc.detail)}, exc.status_code)

    async def answer_error(_request, exc: Exception):
        return error_response(exc)

    for kind in (OipError, ImageInputError, Exception):
        app.add_exception_handler(kind, answer_error)


def _add_health_routes(app: FastAPI, service: DetectorService) -> None:
    """Liveness, readiness, server and model metadata, Prometheus metrics."""

    @app.get("/v2/health/live")
    async def live():
        return json_response({"live": service.live}, 200 if service.live else 503)

    @app.get("/v2/health/ready")
    async def ready():
        is_ready = await service.check_ready()
        return json_response({"ready": is_ready}, 200 if is_ready else 503)

    @app.get("/v2")
    async def server_metadata():
        return json_response(
            {"name": "oaml", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def metadata(name: str, version: str | None = None):
        service.check_model(name, version)
        return json_response(service.model_metadata())

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None):
        service.check_model(name, version)
        is_ready = await service.check_ready()
        return json_response({"name": name, "ready": is_ready}, 200 if is_ready else 503)

    @app.get("/metrics")
    async def prometheus():
        return Response(service.metrics.render(), media_type=service.metrics.content_type)
