"""Load generator for `oaml bench serve`, run as its own process: C keep-alive connections, each
sending one OIP v2 infer request (N images, binary or JSON tensors) after another for a fixed
time.

A minimal asyncio HTTP/1.1 client on purpose: on a 2-core machine the load generator shares the
CPU with the server, and a general client library costs several times more per request than the
server's own work on a small model, which would measure the client instead of the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

import numpy as np
import orjson


def infer_request(host: str, path: str, images: np.ndarray, as_json: bool = False) -> bytes:
    """A complete HTTP request: OIP JSON header + raw uint8 tensor (Triton's binary extension),
    or with `as_json` the tensor as a JSON `data` list and JSON outputs (what a plain HTTP
    client sends)."""
    if as_json:
        body = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "images",
                        "datatype": "UINT8",
                        "shape": list(images.shape),
                        "data": images.reshape(-1).tolist(),
                    }
                ]
            }
        )
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body
    raw = images.tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "UINT8",
                    "shape": list(images.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    body = header + raw
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {len(header)}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one whole response (Content-Length or chunked, as KServe's binary answers come);
    return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length, chunked = 0, False
    for line in head.split(b"\r\n"):
        lower = line.lower()
        if lower.startswith(b"content-length:"):
            length = int(line[15:])
        elif lower.startswith(b"transfer-encoding:") and b"chunked" in lower:
            chunked = True
    if not chunked:
        await reader.readexactly(length)
        return status
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        await reader.readexactly(size + 2)  # the chunk and its CRLF (the last: just CRLF)
        if size == 0:
            return status


async def _client(host, port, request, stop_at, warm_until, latencies, errors):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                return
            writer.write(request)
            # A stuck server must fail the benchmark, not hang it.
            status = await asyncio.wait_for(_read_response(reader), timeout=60)
            done = time.perf_counter()
            if status != 200:
                errors.append(status)
            elif started >= warm_until:
                latencies.append(done - started)
    finally:
        writer.close()


async def run_load(
    url: str,
    model: str,
    concurrency: int,
    seconds: float,
    warmup: float,
    image_shape,
    images_per_request: int = 1,
    as_json: bool = False,
) -> dict:
    parts = urlsplit(url)
    shape = (images_per_request, *image_shape)
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    request = infer_request(parts.netloc, f"/v2/models/{model}/infer", images, as_json)
    latencies: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    warm_until, stop_at = start + warmup, start + warmup + seconds
    await asyncio.gather(
        *(
            _client(parts.hostname, parts.port, request, stop_at, warm_until, latencies, errors)
            for _ in range(concurrency)
        )
    )
    measured = np.array(latencies) * 1000.0
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "images_per_second": len(latencies) * images_per_request / seconds,
        "p50_ms": float(np.percentile(measured, 50)) if len(measured) else None,
        "p99_ms": float(np.percentile(measured, 99)) if len(measured) else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--shape", default="28,28,1", help="H,W,C of one image")
    parser.add_argument("--images", type=int, default=1, help="images per request")
    parser.add_argument("--json", action="store_true", help="JSON tensors, not binary")
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    load = run_load(
        args.url, args.model, args.concurrency, args.seconds, args.warmup, shape,
        args.images, args.json,
    )  # fmt: skip
    result = asyncio.run(load)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
