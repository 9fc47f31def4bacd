"""The connection layer's bounds that uvicorn's httptools protocol lacks: the size of a request's
head (URL and headers, which httptools grows without limit on the event loop), the time to
receive it (a socket that connects and sends nothing holds a connection slot until then), and
health probes answered even while the connection limit turns other requests away."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

PROBE_PATHS = (b"/v2/health/live", b"/v2/health/ready")
LINGER_S = 2.0  # a refused connection's remaining input is drained this long, then closed


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request already refused."""


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head: `max_head_bytes` of URL and
    headers (431 past it) arriving within `head_timeout_s` of the connection or of the request's
    first byte (408, then the connection closes)."""

    max_head_bytes = 64 * 1024
    head_timeout_s = 10.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._head_timer, self._head_open, self._head_bytes, self._head_size = None, True, 0, 0
        self._refused = False
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not (self._refused or self.transport.is_closing()):
            self._refuse(408, f"the request head did not arrive in {self.head_timeout_s:g} s")

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` in plain text and end the connection: no request is under way to
        answer it. What the client still sends is read and dropped for LINGER_S (a close with
        unread data would reset the connection and lose the answer), then it is closed."""
        body = message.encode("ascii")
        head = (
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(STATUS_LINE[status] + head + body)
        self._refused = True
        self._cancel_head_timer()
        self.connections.discard(self)  # draining, it holds no slot of the connection limit
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():  # answered: the rest is dropped
            return
        # Counted by what arrives, since httptools joins a header's pieces before any callback
        # sees it; a head still open after this chunk is at least that long.
        counting = self._head_open
        self._head_bytes += len(data) if counting else 0
        super().data_received(data)
        over = counting and self._head_open and self._head_bytes > self.max_head_bytes
        if over and not (self._refused or self.transport.is_closing()):
            self._refuse_large_head()

    def _refuse_large_head(self) -> None:
        limit = self.max_head_bytes
        self._refuse(431, f"the request head (URL and headers) exceeds {limit} bytes")

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers an exception out of a parser callback with a 400; a head refused as
        # too large was answered (431) and closed already.
        if not (self._refused or self.transport.is_closing()):
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_open, self._head_bytes = True, 0  # what comes next is the next request's head

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._head_open = False
        if self._head_size > self.max_head_bytes:  # a head that arrived in one piece
            self._refuse_large_head()
            raise _HeadTooLarge  # stops the parser (uvicorn's 400 for it is not sent)
        if self.url.split(b"?", 1)[0] not in PROBE_PATHS:
            return super().on_headers_complete()
        # A probe is answered whatever the connection limit: a pod whose slots are held by
        # idle or slow clients must not be restarted (liveness) or dropped (readiness) for it.
        limit, self.limit_concurrency = self.limit_concurrency, None
        try:
            super().on_headers_complete()
        finally:
            self.limit_concurrency = limit


def guarded_protocol(max_head_bytes: int, head_timeout_s: float) -> type[GuardedHttpTools]:
    """The protocol class one server runs, with its limits."""
    limits = {"max_head_bytes": max_head_bytes, "head_timeout_s": head_timeout_s}
    return type("ServerHttpTools", (GuardedHttpTools,), limits)
