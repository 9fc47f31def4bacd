"""The settings of one `oaml serve`, each defined once: its default, and the unit and help text
its command-line option shows it in (`oaml serve` derives its options from this class)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oaml.serving.guard import BodyLimits

SERVE_MAX_PIXELS = 4096 * 4096  # per image; `oaml score` offline allows DEFAULT_MAX_PIXELS
KIB, MIB = 1 << 10, 1 << 20


def option(default: Any, flag: str, help: str, unit: int = 1) -> Any:
    """A setting `oaml serve --FLAG` sets, given in `unit`s (KIB, MIB) of the stored value."""
    return field(default=default, metadata={"flag": flag, "unit": unit, "help": help})


@dataclass(frozen=True)
class ServeSettings:
    """Limits, batching and health rules of one server."""

    name: str = "oaml-detector"
    version: str = "1"
    max_batch: int = option(64, "max_batch", "Most images per onnxruntime call")
    max_batch_bytes: int = option(
        64 * MIB, "max_batch_mb", "Most MiB of images per onnxruntime call", MIB
    )
    max_wait_ms: float = option(0.0, "max_wait_ms", "How long a batch waits for more requests")
    max_images: int = option(256, "max_images", "Most images per request")
    max_body_bytes: int = option(32 * MIB, "max_body_mb", "Largest request body, MiB", MIB)
    max_json_bytes: int = option(
        8 * MIB,
        "max_json_mb",
        "Largest JSON of a request (a body or a binary request's header), MiB",
        MIB,
    )
    max_buffered_bytes: int = option(
        512 * MIB, "max_buffered_mb", "Most MiB of request bodies held at once; past it: 503", MIB
    )
    body_timeout_s: float = option(
        30.0, "body_timeout", "Seconds to receive a whole request body; then 408"
    )
    min_body_rate: int = option(
        64 * KIB,
        "min_body_rate_kb",
        "KiB/s a body must average after its first 2 s; then 408 (0: off)",
        KIB,
    )
    max_head_bytes: int = option(
        64 * KIB, "max_header_kb", "Largest request head (URL and headers), KiB; past it: 431", KIB
    )
    head_timeout_s: float = option(
        10.0, "header_timeout", "Seconds to receive a request's head; then 408 and close"
    )
    infer_timeout_s: float = option(
        30.0, "infer_timeout", "Seconds a queued request waits for the model; then 503"
    )
    max_connections: int = option(
        512, "max_connections", "Most open connections and requests; past it: 503 (not probes)"
    )
    # Decoding costs memory by pixels, not by file bytes (a 5 KB 1-bit PNG may hold 40 MP):
    # a limit per image, a budget per request, and a bound on decodes running at once.
    max_pixels: int = option(
        SERVE_MAX_PIXELS, "max_pixels", "Most pixels (width x height) of one uploaded image"
    )
    max_request_pixels: int = option(
        4 * SERVE_MAX_PIXELS,
        "max_request_pixels",
        "Most pixels of all images of one /v1/score request",
    )
    max_concurrent_decodes: int = 2  # decoding processes
    decode_timeout_s: float = option(
        10.0, "decode_timeout", "Seconds one image may take to decode; then 400 (process stopped)"
    )
    # Memory decodes may use at once, by each image's mode (images.DECODE_BYTES_PER_PIXEL): an
    # image that alone needs more is refused; others wait for their share.
    max_decode_bytes: int = option(
        512 * MIB,
        "max_decode_mb",
        "Most MiB that image decodes may use at once (by image mode)",
        MIB,
    )
    max_queued_bytes: int = option(
        256 * MIB, "max_queue_mb", "Most MiB of images waiting for the model; past it: 503", MIB
    )
    # Health: not live after this many model errors in a row (the pod restarts); ready only if
    # a batch succeeded this recently, or a one-image check run by the probe succeeds now.
    max_failures_in_a_row: int = 5
    ready_recent_s: float = 10.0
    token: str | None = None

    def body_limits(self) -> BodyLimits:
        from oaml.serving.guard import BodyLimits

        return BodyLimits(
            self.max_body_bytes, self.max_json_bytes, self.max_buffered_bytes,
            self.body_timeout_s, self.min_body_rate,
        )  # fmt: skip

    @classmethod
    def options(cls) -> list[tuple[str, Any, str]]:
        """(flag, default in the flag's unit, help) of every setting the command line sets."""
        return [
            (f.metadata["flag"], _in_unit(f.default, f.metadata["unit"]), f.metadata["help"])
            for f in fields(cls)
            if "flag" in f.metadata
        ]

    @classmethod
    def from_options(cls, values: dict[str, Any], **rest: Any) -> ServeSettings:
        """The settings `oaml serve`'s options give (in their units), plus `rest` as they are."""
        given = {}
        for f in fields(cls):
            if f.metadata.get("flag") in values:
                value = values[f.metadata["flag"]] * f.metadata["unit"]
                given[f.name] = int(value) if isinstance(f.default, int) else value
        return cls(**given, **rest)


def _in_unit(value: Any, unit: int) -> Any:
    return value / unit if unit != 1 else value
