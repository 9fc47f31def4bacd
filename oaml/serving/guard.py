"""Request guards as pure ASGI middleware: body-size limit and optional bearer-token auth.

Both answer with the OIP error shape {"error": message} before any handler runs, and never log
or echo the token.
"""

from __future__ import annotations

import hmac

import orjson

OPEN_PATHS = ("/v2/health/live", "/v2/health/ready", "/metrics")


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


def limit_body(app, max_bytes: int):
    """413 for bodies over `max_bytes`: from Content-Length at once, else while reading.

    The body is read here (bounded) and replayed to the app, so no handler ever sees more.
    """

    async def guarded(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            return await _reject(
                send, 413, f"request body of {int(declared)} bytes exceeds {max_bytes}"
            )
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > max_bytes:
                return await _reject(send, 413, f"request body exceeds {max_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await app(scope, replay, send)

    return guarded


def require_token(app, token: str | None):
    """401 unless `Authorization: Bearer <token>`; health and metrics stay open for probes."""
    if not token:
        return app
    expected = f"Bearer {token}".encode()

    async def guarded(scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await app(scope, receive, send)
        given = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(given, expected):
            return await _reject(
                send,
                401,
                "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                [(b"www-authenticate", b"Bearer")],
            )
        return await app(scope, receive, send)

    return guarded
