"""The server's answer shapes, shared by the FastAPI handlers and the ASGI fast path: JSON
bodies, and every error as {"error": message} with its status (500s logged, never detailed)."""

from __future__ import annotations

import logging

import orjson
from fastapi import Response

from oaml.serving.images import ImageInputError
from oaml.serving.oip import OipError

log = logging.getLogger("oaml.serving")


def json_response(payload, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, media_type="application/json")


def error_answer(exc: Exception) -> tuple[int, bytes, dict[str, str]]:
    """Status, JSON body and extra headers of the answer to `exc`."""
    if isinstance(exc, OipError):
        status, message, headers = exc.status, str(exc), dict(exc.headers)
    elif isinstance(exc, ImageInputError):
        status, message, headers = 400, str(exc), {}
    else:
        log.error("unexpected error while serving a request", exc_info=exc)
        status, message = 500, f"internal error ({type(exc).__name__}); see the server log"
        headers = {}
    return status, orjson.dumps({"error": message}), headers


def error_response(exc: Exception) -> Response:
    status, body, headers = error_answer(exc)
    return Response(body, status, headers=headers, media_type="application/json")
