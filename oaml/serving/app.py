"""The HTTP app: Open Inference Protocol v2, `/v1/score` for image files, Prometheus metrics.

Handlers read raw requests (no pydantic models on the hot path) and every error is answered as
{"error": message} with a 4xx status, the OIP error shape, so a bad request never takes the server
down. Model work goes through one MicroBatcher, so concurrent requests share onnxruntime calls.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
import orjson
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from oaml import __version__
from oaml.contract import INPUT_NAME, OUTPUT_NAMES, is_ood
from oaml.serving.batching import BatcherBusy, BatcherStopped, MicroBatcher
from oaml.serving.budget import ByteBudget
from oaml.serving.detector import Detector, refused_input
from oaml.serving.guard import BODY_KEY, BodyLimits, limit_body, require_token
from oaml.serving.images import ImageInputError, decode_image, image_header
from oaml.serving.metrics import ServerMetrics
from oaml.serving.multipart import file_parts
from oaml.serving.oip import HEADER_LENGTH, OipError, infer_response, parse_infer

log = logging.getLogger("oaml.serving")
SERVE_MAX_PIXELS = 4096 * 4096  # per image; `oaml score` offline allows DEFAULT_MAX_PIXELS
OUTPUTS = (*OUTPUT_NAMES, "label", "is_ood")
LARGE_BODY = 1 << 20


@dataclass(frozen=True)
class ServeSettings:
    """Limits, batching and health rules of one server."""

    name: str = "oaml-detector"
    version: str = "1"
    max_batch: int = 64
    max_wait_ms: float = 0.0
    max_body_bytes: int = 32 * 1024 * 1024
    max_json_bytes: int = 8 * 1024 * 1024
    max_buffered_bytes: int = 512 * 1024 * 1024  # bodies of all requests held at once
    body_timeout_s: float = 30.0  # to receive a whole body
    infer_timeout_s: float = 30.0  # to wait for the model once queued; then 503
    max_connections: int = 512  # uvicorn answers 503 past it
    max_images: int = 256  # per request
    # Decoding costs memory by pixels, not by file bytes (a 5 KB 1-bit PNG may hold 40 MP):
    # a limit per image, a budget per request, and a bound on decodes running at once.
    max_pixels: int = SERVE_MAX_PIXELS  # per image
    max_request_pixels: int = 4 * SERVE_MAX_PIXELS
    max_concurrent_decodes: int = 2
    # Memory decodes may use at once, by each image's mode (images.DECODE_BYTES_PER_PIXEL): an
    # image that alone needs more is refused; others wait for their share.
    max_decode_bytes: int = 512 * 1024 * 1024
    max_queued_bytes: int = 256 * 1024 * 1024  # images waiting; past it: 503, Retry-After
    # Health: not live after this many model errors in a row (the pod restarts); ready only if
    # a batch succeeded this recently, or a one-image check run by the probe succeeds now.
    max_failures_in_a_row: int = 5
    ready_recent_s: float = 10.0
    token: str | None = None

    def body_limits(self) -> BodyLimits:
        return BodyLimits(
            self.max_body_bytes, self.max_json_bytes, self.max_buffered_bytes, self.body_timeout_s
        )


def _json(payload, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


class DetectorService:
    """The served model's state and checks, shared by the routes: one batcher, one readiness."""

    def __init__(self, detector: Detector, settings: ServeSettings) -> None:
        if detector.info.threshold is None:
            raise ValueError(
                f"{detector.path} carries no calibrated OOD threshold; pass --threshold ENERGY"
            )
        self.detector, self.info, self.settings = detector, detector.info, settings
        self.metrics = ServerMetrics()
        self.batcher = MicroBatcher(
            detector.run, settings.max_batch, settings.max_wait_ms,
            self.metrics.batch_size.observe, settings.max_queued_bytes, refused_input,
        )  # fmt: skip
        self.ready = False
        size, channels = self.info.input_size, self.info.channels
        self._probe_image = np.zeros((1, size, size, channels), np.uint8)
        self._probing = asyncio.Lock()

    @property
    def serving(self) -> bool:
        """Started, not shutting down, and the batcher's worker alive."""
        return self.ready and self.batcher.alive

    @property
    def live(self) -> bool:
        """False once the worker died or the model failed too often in a row: restart me."""
        batcher = self.batcher
        return not batcher.died and batcher.failures_in_a_row < self.settings.max_failures_in_a_row

    def _succeeded_lately(self) -> bool:
        last, batcher = self.batcher.last_success, self.batcher
        recent = last is not None and time.monotonic() - last < self.settings.ready_recent_s
        return recent and batcher.failures_in_a_row == 0

    async def check_ready(self) -> bool:
        """Serving, and the model answered lately; if it has not, one blank image must pass now
        (one probe at a time runs it; under traffic real batches answer for it)."""
        if not self.serving:
            return False
        if self._succeeded_lately():
            return True
        async with self._probing:
            if self._succeeded_lately():
                return True
            try:
                await asyncio.wait_for(self.batcher.submit(self._probe_image), 5.0)
            except Exception:
                log.warning("readiness: the model failed a one-image check", exc_info=True)
                return False
        return True

    def check_model(self, name: str, version: str | None = None) -> None:
        """404 unless `name` (and `version`, when given) is the model served here."""
        served = self.settings
        if name != served.name:
            raise OipError(
                f"model {name!r} is not served here; this server serves {served.name!r}", 404
            )
        if version is not None and version != served.version:
            raise OipError(
                f"version {version!r} of {name!r} is not served here; this server serves "
                f"version {served.version!r}",
                404,
            )

    def check_images(self, images: np.ndarray) -> None:
        """400 unless `images` is an NHWC batch within the count and pixel limits."""
        channels, limits = self.info.channels, self.settings
        if images.ndim != 4 or images.shape[3] != channels:
            raise OipError(
                f"input {INPUT_NAME!r} must be [N, H, W, {channels}] (NHWC, {channels} "
                f"channel(s)), got shape {list(images.shape)}"
            )
        n, height, width = images.shape[:3]
        if not 1 <= n <= limits.max_images:
            raise OipError(f"send 1 to {limits.max_images} images per request, got {n}")
        if height < 1 or width < 1 or height * width > limits.max_pixels:
            raise OipError(f"image size {height}x{width} is empty or over the pixel limit")

    async def score(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and energies through the shared batcher (503 once it has stopped)."""
        timeout = self.settings.infer_timeout_s
        try:
            logits, energy = await asyncio.wait_for(self.batcher.submit(images), timeout)
        except BatcherStopped as exc:
            raise OipError(str(exc), 503) from None
        except BatcherBusy as exc:
            raise OipError(str(exc), 503, {"retry-after": "1"}) from None
        except TimeoutError:
            message = f"the model did not answer within {timeout:g} s; retry shortly"
            raise OipError(message, 503, {"retry-after": "1"}) from None
        except Exception as exc:
            # onnxruntime refusing an input it was given is the request's fault: a 400 naming
            # what it said (batches only join equal shapes, so no other request shares it).
            if refused_input(exc):
                reason = str(exc).splitlines()[0][:300]
                raise OipError(f"the model refused the input: {reason}") from None
            raise
        self.metrics.images.inc(len(energy))
        self.metrics.ood_images.inc(int(is_ood(energy, self.info.threshold).sum()))
        return logits, energy

    def model_metadata(self) -> dict:
        """The OIP model metadata, with the detector's classes, size and threshold."""
        info, k = self.info, self.info.num_classes
        return {
            "name": self.settings.name,
            "versions": [self.settings.version],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, -1, -1, info.channels]}
            ],
            "outputs": [
                {"name": "logits", "datatype": "FP32", "shape": [-1, k]},
                {"name": "energy", "datatype": "FP32", "shape": [-1]},
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "is_ood", "datatype": "BOOL", "shape": [-1]},
            ],
            "parameters": {
                "class_names": list(info.class_names),
                "input_size": info.input_size,
                "temperature": info.temperature,
                "ood_threshold": info.threshold,
                "arch": info.arch,
            },
        }


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
    fast_path = _add_infer_routes(app, service)
    _add_score_route(app, service)
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


INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


def _error_answer(exc: Exception) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, JSON body and extra headers of the answer to `exc`, as the app's handlers give."""
    if isinstance(exc, OipError):
        status, message = exc.status, str(exc)
        extra = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
    elif isinstance(exc, ImageInputError):
        status, message, extra = 400, str(exc), []
    else:
        log.error("unexpected error while serving a request", exc_info=exc)
        status, message = 500, f"internal error ({type(exc).__name__}); see the server log"
        extra = []
    return status, orjson.dumps({"error": message}), extra


def _add_infer_routes(app: FastAPI, service: DetectorService):
    """OIP v2 inference. Returns the ASGI fast path that answers it before FastAPI's own stack
    (exception, body-limit, telemetry and exit-stack middleware, routing), which cost about a
    third of a one-image request's server time; the Starlette route stays for the same paths
    (405 for other methods, and any request the fast path does not take)."""
    parsing = asyncio.Semaphore(1)

    async def answer(name: str, version: str | None, body, header_length: str | None):
        service.check_model(name, version)
        if len(body) > LARGE_BODY and header_length is None:
            # Big JSON tensors take long to parse and ~10x their size while parsing: off the
            # event loop, one at a time.
            async with parsing:
                parsed = await run_in_threadpool(parse_infer, body, header_length, OUTPUTS)
        else:
            parsed = parse_infer(body, header_length, OUTPUTS)
        service.check_images(parsed.images)
        logits, energy = await service.score(parsed.images)
        outputs = {
            "logits": logits,
            "energy": energy,
            "label": logits.argmax(axis=1).astype(np.int64),
            "is_ood": is_ood(energy, service.info.threshold),
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
                body, extra = await answer(
                    match[1], match[2], scope[BODY_KEY], None if split is None else split.decode()
                )
                status = 200
                headers = [(k.encode(), v.encode()) for k, v in extra.items()]
            except Exception as exc:
                status, body, headers = _error_answer(exc)
                headers.append((b"content-type", b"application/json"))
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return None

        return asgi

    return fast_path


def _add_score_route(app: FastAPI, service: DetectorService) -> None:
    """`/v1/score`: image files in a multipart form, one decision per file."""
    info, limits = service.info, service.settings

    decoding = asyncio.Semaphore(limits.max_concurrent_decodes)
    decode_budget = ByteBudget(limits.max_decode_bytes)

    def read_headers(blobs: list[tuple[str, memoryview]]) -> int:
        """The memory the dearest image of the request needs to decode (they decode one by
        one); 400 when the request's pixels or one image's decode are over the limits."""
        headers = [(name, image_header(data, name)) for name, data in blobs]
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

    def decode_all(blobs: list[tuple[str, memoryview]]) -> np.ndarray:
        return np.stack(
            [
                decode_image(
                    data, info.input_size, info.channels, name, limits.max_pixels,
                    interpolation=info.interpolation,
                )
                for name, data in blobs
            ]
        )  # fmt: skip

    @app.post("/v1/score")
    async def score_files(request: Request):
        content_type = request.headers.get("content-type", "")
        parts = file_parts(content_type, await _body(request), limits.max_images)
        blobs = [(_file_name(part.filename, i), part.data) for i, part in enumerate(parts)]
        need = await run_in_threadpool(read_headers, blobs)
        async with decode_budget.reserve(need), decoding:
            images = await run_in_threadpool(decode_all, blobs)
        logits, energy = await service.score(images)
        answers = service.detector.decide(logits, energy)
        for (name, _), answer in zip(blobs, answers, strict=True):
            answer["file"] = name
        return _json(answers)


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
