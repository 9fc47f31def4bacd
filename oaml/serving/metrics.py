"""Prometheus metrics of the server: requests, latency, batch sizes, OOD rate.

Each app owns its registry, so several servers (or tests) in one process never share counters.
"""

from __future__ import annotations

import functools
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def endpoint_of(path: str) -> str:
    """A small fixed set of labels (never the raw path: unbounded label values)."""
    if path.endswith("/infer"):
        return "infer"
    if path == "/v1/score":
        return "score"
    if path.startswith("/v2/health"):
        return "health"
    if path.startswith("/v2"):
        return "metadata"
    return "metrics" if path == "/metrics" else "other"


class ServerMetrics:
    """The server's counters and histograms, plus a pure-ASGI middleware that records them."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "oaml_requests", "HTTP requests", ["endpoint", "code"], registry=self.registry
        )
        self.latency = Histogram(
            "oaml_request_latency_seconds",
            "Request latency",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "oaml_batch_size",
            "Images per onnxruntime call",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "oaml_requests_in_flight",
            "Requests received and not yet answered",
            ["endpoint"],
            registry=self.registry,
        )
        self.images = Counter("oaml_images", "Images scored", registry=self.registry)
        self.ood_images = Counter(
            "oaml_ood_images", "Images flagged out-of-distribution", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self, app):
        """Wrap an ASGI app: count every HTTP answer by endpoint and status, time it."""

        async def observed(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            endpoint, started, status = endpoint_of(scope["path"]), time.perf_counter(), [500]

            async def send_status(message):
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            in_flight, latency = self._children(endpoint)
            in_flight.inc()
            try:
                await app(scope, receive, send_status)
            finally:
                in_flight.dec()
                latency.observe(time.perf_counter() - started)
                self.requests.labels(endpoint, str(status[0])).inc()

        return observed

    @functools.cache  # noqa: B019  (few endpoints, and the metrics live as long as the app)
    def _children(self, endpoint: str):
        """The in-flight gauge and latency histogram of `endpoint`, looked up once, not per
        request (labels() takes a lock and builds a key each time)."""
        return self.in_flight.labels(endpoint), self.latency.labels(endpoint)
