"""The inference routes: OIP v2 infer (with its ASGI fast path) and `/v1/score` for image
files. Both run the model through the service's shared batcher."""

from __future__ import annotations

import asyncio
import re

import numpy as np
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from oaml.serving.answers import error_answer, json_response
from oaml.serving.budget import ByteBudget
from oaml.serving.guard import BODY_KEY
from oaml.serving.images import SERVED_FORMATS, image_header
from oaml.serving.multipart import file_parts
from oaml.serving.oip import (
    HEADER_LENGTH,
    OipError,
    infer_response,
    json_header_length,
    parse_infer,
)
from oaml.serving.service import OUTPUTS, DetectorService

LARGE_BODY = 1 << 20


INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


def add_infer_routes(app: FastAPI, service: DetectorService):
    """OIP v2 inference. Returns the ASGI fast path that answers it before FastAPI's own stack
    (exception, body-limit, telemetry and exit-stack middleware, routing), which cost about a
    third of a one-image request's server time; the Starlette route stays for the same paths
    (405 for other methods, and any request the fast path does not take)."""
    parsing = asyncio.Semaphore(1)

    async def answer(name: str, version: str | None, body, header_length: str | None):
        service.check_model(name, version)
        json_limit = service.settings.max_json_bytes
        # The JSON part, whatever the content type says: the whole body, or the header part of
        # a binary request.
        json_part = len(body) if header_length is None else json_header_length(header_length)
        if json_part > json_limit:
            raise OipError(
                f"the JSON of a request may hold {json_limit} bytes, this one {json_part}: send "
                "large tensors as binary data (Inference-Header-Content-Length)",
                413,
            )
        if len(body) > LARGE_BODY:
            # Big bodies take long to parse (JSON ~10x its size while parsing): off the event
            # loop, one at a time, so probes and small requests are answered meanwhile.
            async with parsing:
                parsed = await run_in_threadpool(parse_infer, body, header_length, OUTPUTS)
        else:
            parsed = parse_infer(body, header_length, OUTPUTS)
        service.check_images(parsed.images)
        logits, energy, confidence = await service.score(parsed.images)
        outputs = {
            "logits": logits,
            "energy": energy,
            "label": logits.argmax(axis=1).astype(np.int64),
            "confidence": confidence.astype(np.float32),
            "is_ood": service.detector.flags(confidence),
        }
        return infer_response(service.settings.name, service.settings.version, parsed, outputs)

    async def infer(request: Request):
        params = request.path_params
        body, headers = await answer(
            params["name"], params.get("version"), await _body(request),
            request.headers.get(HEADER_LENGTH),
        )  # fmt: skip
        return Response(body, headers=headers, media_type=headers.pop("content-type"))

    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        app.router.add_route(path, infer, methods=["POST"])

    header_name = HEADER_LENGTH.encode()

    def fast_path(inner):
        async def asgi(scope, receive, send):
            match = None
            if scope["type"] == "http" and scope["method"] == "POST" and BODY_KEY in scope:
                match = INFER_PATH.fullmatch(scope["path"])
            if match is None:
                return await inner(scope, receive, send)
            split = next((v for k, v in scope["headers"] if k == header_name), None)
            try:
                # latin-1 decodes any bytes: a non-ASCII length is parse_infer's 400, not a 500.
                length = None if split is None else split.decode("latin-1")
                body, extra = await answer(match[1], match[2], scope[BODY_KEY], length)
                status = 200
                headers = [(k.encode(), v.encode()) for k, v in extra.items()]
            except Exception as exc:
                status, body, extra = error_answer(exc)
                headers = [(k.encode(), v.encode()) for k, v in extra.items()]
                headers.append((b"content-type", b"application/json"))
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return None

        return asgi

    return fast_path


def add_score_route(app: FastAPI, service: DetectorService) -> None:
    """`/v1/score`: image files in a multipart form, one decision per file."""
    limits = service.settings

    decode_budget = ByteBudget(limits.max_decode_bytes)

    def read_headers(blobs: list[tuple[str, memoryview]]) -> int:
        """The memory the dearest image of the request needs to decode (they decode one by
        one); 400 when the request's pixels or one image's decode are over the limits."""
        headers = [(name, image_header(data, name, SERVED_FORMATS)) for name, data in blobs]
        total = sum(header.pixels for _, header in headers)
        if total > limits.max_request_pixels:
            raise OipError(
                f"the images of this request hold {total} pixels together, over the limit of "
                f"{limits.max_request_pixels}: send fewer or smaller images per request"
            )
        for name, header in headers:
            mib, limit = header.decode_bytes >> 20, limits.max_decode_bytes >> 20
            if header.decode_bytes > limits.max_decode_bytes:
                raise OipError(
                    f"{name}: {header.width}x{header.height} pixels in mode {header.mode} take "
                    f"about {mib} MiB to decode, over this server's {limit} MiB: send it smaller"
                    " or as 8-bit RGB / greyscale"
                )
        return max(header.decode_bytes for _, header in headers)

    def parse_form(content_type: str, body) -> tuple[list[tuple[str, memoryview]], int]:
        """The files of the form (python-multipart is pure Python: off the event loop) and the
        decode memory the request needs."""
        parts = file_parts(content_type, body, limits.max_images)
        blobs = [(_file_name(part.filename, i), part.data) for i, part in enumerate(parts)]
        return blobs, read_headers(blobs)

    @app.post("/v1/score")
    async def score_files(request: Request):
        content_type = request.headers.get("content-type", "")
        blobs, need = await run_in_threadpool(parse_form, content_type, await _body(request))
        async with decode_budget.reserve(need):
            images = await service.decoders.decode_all(blobs)
        answers = service.detector.decide(*await service.score(images))
        for (name, _), answer in zip(blobs, answers, strict=True):
            answer["file"] = name
        return json_response(answers)


async def _body(request: Request) -> bytes | bytearray:
    """The body the guard read, without another copy (Starlette's body() would join it anew)."""
    body = request.scope.get(BODY_KEY)
    return body if body is not None else await request.body()


MAX_NAME = 255  # characters of a file name echoed back (a common file system limit)


def _file_name(name: str | None, index: int) -> str:
    """The upload's file name as answers and errors show it: never longer than MAX_NAME."""
    if not name:
        return f"files[{index}]"
    return name if len(name) <= MAX_NAME else f"{name[: MAX_NAME - 3]}..."
