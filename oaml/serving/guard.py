"""Request guards as pure ASGI middleware: bounded bodies and optional bearer-token auth.

Both answer with the OIP error shape {"error": message} before any handler runs, and never log
or echo the token.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from dataclasses import dataclass, replace

import orjson

from oaml.serving.budget import ByteBudget

OPEN_PATHS = ("/v2/health/live", "/v2/health/ready", "/metrics")
NO_BODY_METHODS = ("GET", "HEAD", "OPTIONS", "DELETE")
NO_BODY = "this request takes no body (a GET, or a health or metrics path): send it without one"


async def _reject(send, status: int, message: str, headers: list | None = None) -> None:
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class BodyLimits:
    """What one server holds of request bodies: per request, for JSON, in all, and for how long."""

    max_bytes: int = 32 * 1024 * 1024
    # JSON tensors cost ~4x their bytes to parse and hold the GIL while parsing: a smaller cap
    # keeps one parse well under a probe's timeout (8 MiB: about 0.1 s here).
    max_json_bytes: int = 8 * 1024 * 1024
    max_buffered_bytes: int = 512 * 1024 * 1024  # all requests' bodies held at once
    read_timeout_s: float = 30.0  # a body trickled in slower than this is dropped (408)
    # A body must also arrive at this average rate once RATE_GRACE_S have passed (0: no bound):
    # a slow upload may not hold its share of the budget for the whole read timeout.
    min_rate: int = 64 * 1024  # bytes/s


def _is_json(headers: dict[bytes, bytes]) -> bool:
    content_type = headers.get(b"content-type", b"")
    return content_type.split(b";")[0].strip().lower() == b"application/json"


BODY_KEY = "oaml.body"  # where the guard leaves the body in the ASGI scope for the handlers
BUSY = [(b"retry-after", b"1")]


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: list | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or []


def _take(budget: ByteBudget, n: int) -> None:
    if not budget.try_take(n):
        raise _Refused(
            503, "the server holds as many request bodies as it may; retry shortly", BUSY
        )


RATE_GRACE_S = 2.0


async def _paced(receive, received: int, started: float, min_rate: int):
    """The next message, or 408 once the body so far has fallen below `min_rate` on average."""
    if not min_rate:
        return await receive()
    due = started + max(RATE_GRACE_S, (received + 1) / min_rate)
    try:
        async with asyncio.timeout_at(due):
            return await receive()
    except TimeoutError:
        message = f"the request body arrives slower than {min_rate / 1024:g} KiB/s"
        raise _Refused(408, message) from None


async def _read_body(
    receive, declared: int | None, limits: BodyLimits, budget: ByteBudget, taken: list[int]
) -> bytes | bytearray | None:
    """The whole body (None if the client went away), charged to `budget` before it is read:
    all of a declared Content-Length at once, into one buffer (no copy to join chunks)."""
    started, received = asyncio.get_running_loop().time(), 0
    if declared is not None:
        _take(budget, declared)
        taken[0] = declared
        body, filled = bytearray(declared), 0
    else:
        chunks = []
    while True:
        message = await _paced(receive, received, started, limits.min_rate)
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        received += len(chunk)
        if declared is not None:
            if filled + len(chunk) > declared:
                raise _Refused(400, "the request body is longer than its Content-Length")
            body[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        else:
            if taken[0] + len(chunk) > limits.max_bytes:
                raise _Refused(413, f"request body exceeds {limits.max_bytes} bytes")
            _take(budget, len(chunk))
            taken[0] += len(chunk)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if declared is not None:
        if filled != declared:
            raise _Refused(400, "the request body is shorter than its Content-Length")
        return body
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def limit_body(app, limits: BodyLimits):
    """Read each body whole, bounded in size, total and time, then hand it to the app (as the
    replayed message, and as scope[BODY_KEY] for handlers that take it without a copy).

    413 over the size limit (from Content-Length at once, else while reading), 408 when the body
    does not arrive within the timeout, 503 with Retry-After while the server already holds its
    budget of bodies. No handler ever sees more than the limit.
    """
    budget = ByteBudget(limits.max_buffered_bytes)

    async def guarded(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        headers = dict(scope["headers"])
        if scope["method"] in NO_BODY_METHODS or scope["path"] in OPEN_PATHS:
            # Nothing here reads a body: refused unread, never charged to the shared budget
            # (these paths are open to unauthenticated clients and probes).
            if headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers:
                return await _reject(send, 400, NO_BODY)
            return await app(scope, receive, send)
        is_json = _is_json(headers)
        max_bytes = min(limits.max_bytes, limits.max_json_bytes) if is_json else limits.max_bytes
        body_limits = replace(limits, max_bytes=max_bytes)
        hint = " (JSON: send large tensors as binary data)" if is_json else ""
        length = headers.get(b"content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is not None and declared > max_bytes:
            return await _reject(
                send, 413, f"request body of {declared} bytes exceeds {max_bytes}{hint}"
            )
        taken = [0]
        try:
            try:
                async with asyncio.timeout(limits.read_timeout_s):
                    body = await _read_body(receive, declared, body_limits, budget, taken)
            except TimeoutError:
                timeout = limits.read_timeout_s
                return await _reject(send, 408, f"the request body did not arrive in {timeout:g} s")
            except _Refused as refused:
                message = str(refused) + (hint if refused.status == 413 else "")
                return await _reject(send, refused.status, message, refused.headers)
            if body is None:
                return None  # the client went away
            scope[BODY_KEY] = body
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": bytes(body), "more_body": False}
                return await receive()

            return await app(scope, replay, send)
        finally:
            budget.give_back(taken[0])

    return guarded


# What an unrendered manifest or a placeholder leaves in a token: ${X}, $(X), {{ x }}, <token>,
# %X%, changeme and the like. Such a value is no secret: refused at start.
_TEMPLATE = re.compile(
    r"\$\{.*\}|\$\(.*\)|\{\{.*\}\}|^<.*>$|^%.*%$|change.?me|replace.?me|your.?token|^x+$",
    re.IGNORECASE,
)


def check_token(token: str | None, source: str) -> str | None:
    """The bearer token to require (None: auth off, only when none was set), or ValueError for
    a value that is set but no secret: empty, blank, with spaces, or a template placeholder."""
    if token is None:
        return None
    if not token or any(c.isspace() for c in token):
        raise ValueError(f"{source} is set but empty or holds spaces: set a random token")
    if _TEMPLATE.search(token):
        raise ValueError(
            f"{source} looks like a placeholder, not a secret (a template left unrendered?): "
            "set a random token, e.g. from `openssl rand -hex 32`"
        )
    if not token.isascii() or not token.isprintable():
        raise ValueError(f"{source} must be printable ASCII (an HTTP header carries it)")
    return token


def require_token(app, token: str | None):
    """401 unless `Authorization: Bearer <token>` (the scheme in any case, RFC 7235); health
    and metrics stay open for probes."""
    if not token:
        return app
    expected = token.encode()

    async def guarded(scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await app(scope, receive, send)
        scheme, _, given = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), expected):
            return await _reject(
                send,
                401,
                "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                [(b"www-authenticate", b"Bearer")],
            )
        return await app(scope, receive, send)

    return guarded
