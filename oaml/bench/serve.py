"""`oaml bench serve`: PyTorch eager, the raw onnxruntime session (the limit) and the HTTP server
under concurrency, on the same model and machine in one run; with `--peer kserve`, KServe's
Python ModelServer serving the same ONNX file under the same load generator.

Results are images/s and p50/p99 latency per row, plus the ratios the serving goals are stated
in: server at concurrency C vs the raw session at batch C, onnxruntime vs PyTorch, and the
server's p99 at concurrency 1 minus the raw session's p99 at batch 1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oaml.bench.report import write_results
from oaml.bench.stamp import source_tree


def time_calls(call: Callable[[], Any], batch: int, seconds: float, warmup: float = 1.0) -> dict:
    """Call repeatedly for `seconds` after `warmup`; images/s and per-call latency percentiles."""
    end_warmup = time.perf_counter() + warmup
    while time.perf_counter() < end_warmup:
        call()
    latencies = []
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < seconds:
        call()
        latencies.append(time.perf_counter() - now)
    elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000.0
    return {
        "batch": batch,
        "images_per_second": batch * len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def _pytorch_rows(checkpoint: Path, shape, batches, seconds: float) -> list[dict]:
    import torch

    from oaml.models.checkpoint import load_checkpoint
    from oaml.scores import energy

    model, _, _ = load_checkpoint(checkpoint)
    model = model.to(memory_format=torch.channels_last)
    rows = []
    for batch in batches:
        x = torch.from_numpy(_images(batch, shape)).permute(
            0, 3, 1, 2
        )  # NHWC memory: channels_last

        def call(x=x):
            with torch.inference_mode():
                energy(model(x))

        rows.append({"runtime": "pytorch eager", **time_calls(call, batch, seconds)})
    return rows


def _onnx_rows(onnx: Path, shape, batches, seconds: float, threads: int | None) -> list[dict]:
    from oaml.serving.detector import Detector

    detector = Detector(onnx, threads=threads)
    rows = []
    for batch in batches:
        images = _images(batch, shape)
        rows.append(
            {
                "runtime": "onnxruntime session",
                **time_calls(lambda images=images: detector.run(images), batch, seconds),
            }
        )
    return rows


def _images(batch: int, shape) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (batch, *shape), dtype=np.uint8)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(
    command: list[str], port: int, log: Path, tree: Path | None = None
) -> tuple[subprocess.Popen, str]:
    """Start a server on `port` (oaml's code from `tree` when given), wait for its OIP
    readiness; its log goes to a file (a pipe nobody reads would block the server once full)."""
    import httpx

    # The benchmark talks to the server without a token.
    env = {k: v for k, v in os.environ.items() if k != "OAML_SERVE_TOKEN"}
    if tree:
        env["PYTHONPATH"] = str(tree)
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=tree
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited; its log: {log}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the server did not become ready in 120 s; its log: {log}")


@dataclass(frozen=True)
class ServeLoad:
    """What the load generator sends and how the server is started: `images` per request, as
    JSON tensors or binary; the server's --max-batch (None: its default); `baseline`, a git
    revision whose `oaml serve` runs beside this one under the same load (before/after);
    `rounds` of the raw session and every server, interleaved, each row their median."""

    images: int = 1
    as_json: bool = False
    max_batch: int | None = None
    baseline: str | None = None
    rounds: int = 1


def _oaml_command(onnx: Path, port: int, load: ServeLoad, threads: int | None) -> list[str]:
    command = [sys.executable, "-m", "oaml.cli", "serve", "--model", str(onnx),
               "--name", "bench", "--port", str(port)]  # fmt: skip
    command += ["--max-batch", str(load.max_batch)] if load.max_batch else []
    return command + (["--threads", str(threads)] if threads else [])


def _kserve_command(python: Path, onnx: Path, port: int, threads: int | None) -> list[str]:
    from oaml.bench.peers import PEER_SCRIPT
    from oaml.serving.detector import default_threads

    return [str(python), str(PEER_SCRIPT), "--model-path", str(onnx), "--name", "bench",
            "--port", str(port), "--grpc-port", str(_free_port()),
            "--threads", str(threads or default_threads())]  # fmt: skip


def _load(url: str, level: int, seconds: float, shape, load: ServeLoad) -> dict:
    command = [sys.executable, "-m", "oaml.bench.loadgen", "--url", url, "--model", "bench",
               "--concurrency", str(level), "--seconds", str(seconds),
               "--shape", ",".join(map(str, shape)), "--images", str(load.images)]  # fmt: skip
    command += ["--json"] if load.as_json else []
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 120)
    result = json.loads(out.stdout)
    return {k: result[k] for k in ("images_per_second", "p50_ms", "p99_ms", "errors")}


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def _server_rows(
    onnx, shape, concurrency, seconds, load: ServeLoad, threads, out_dir: Path, peer, raw
) -> list[dict]:
    """The raw session's rows (`raw()`), then `oaml serve` (its baseline revision, and the peer
    when given its interpreter) under the same load generator, level by level, each level on
    all before the next, `load.rounds` times: the machine's drift hits them alike."""
    servers = {}
    try:
        port = _free_port()
        servers["http server"] = _start(
            _oaml_command(onnx, port, load, threads), port, out_dir / "server.log"
        )
        if load.baseline:
            tree, port = source_tree(load.baseline, out_dir), _free_port()
            servers[f"http server @ {load.baseline}"] = _start(
                _oaml_command(onnx, port, load, threads), port, out_dir / "baseline.log", tree
            )
        if peer:
            port = _free_port()
            servers["kserve modelserver"] = _start(
                _kserve_command(peer, onnx, port, threads), port, out_dir / "kserve.log"
            )
        rounds = [
            raw() + _level_rows(servers, concurrency, seconds, shape, load, reverse=r % 2 == 1)
            for r in range(load.rounds)
        ]
        rows = _median_rows(rounds)
        import httpx

        metrics = httpx.get(f"{servers['http server'][1]}/metrics").text
    finally:
        for proc, _ in servers.values():
            _stop(proc)
    sums = dict(
        line.split()
        for line in metrics.splitlines()
        if line.startswith(("oaml_batch_size_sum", "oaml_batch_size_count"))
    )
    mean_batch = float(sums["oaml_batch_size_sum"]) / max(1.0, float(sums["oaml_batch_size_count"]))
    for row in rows:
        if row["runtime"] == "http server":
            row["mean_server_batch_all_levels"] = mean_batch
    return rows


def _level_rows(servers: dict, concurrency, seconds, shape, load: ServeLoad, reverse: bool):
    """Every server at every level, listed in one order; measured in the reverse order of the
    servers when `reverse` (odd rounds), so none always runs right after the raw session."""
    rows = []
    for level in concurrency:
        order = list(servers.items())
        measured = {
            runtime: _load(url, level, seconds, shape, load)
            for runtime, (_, url) in (order[::-1] if reverse else order)
        }
        rows += [
            {"runtime": runtime, "concurrency": level, "batch": load.images,
             "request": "json" if load.as_json else "binary", **measured[runtime]}
            for runtime, _ in order
        ]  # fmt: skip
    return rows


def _median_rows(rounds: list[list[dict]]) -> list[dict]:
    """Row by row (the rounds list them in one order), the median of each measure."""
    merged = []
    for same in zip(*rounds, strict=True):
        row = dict(same[0])
        for key in ("images_per_second", "p50_ms", "p99_ms"):
            values = [r[key] for r in same if r[key] is not None]
            row[key] = float(np.median(values)) if values else None
        if "errors" in row:
            row["errors"] = sum(r["errors"] for r in same)
        merged.append(row)
    return merged


def _goals(rows: list[dict], batch: int) -> dict[str, float | None]:
    """The ratios: each server level over the raw session at `batch` (the baseline revision's
    as `before_...`), onnxruntime over PyTorch, the one-request p99 overhead, and the peer's."""

    def find(runtime, batch=None, concurrency=None):
        for row in rows:
            if (
                row["runtime"] == runtime
                and (batch is None or row["batch"] == batch)
                and (concurrency is None or row.get("concurrency") == concurrency)
            ):
                return row
        return None

    ort_b, torch_b = find("onnxruntime session", batch), find("pytorch eager", batch)
    ort_1, server_1 = find("onnxruntime session", 1), find("http server", 1, concurrency=1)
    goals: dict[str, float | None] = {}
    for row in rows:
        level, runtime = row.get("concurrency"), row["runtime"]
        if runtime == "kserve modelserver":
            ours = find("http server", concurrency=level)
            goals[f"oaml_over_kserve_ratio_c{level}"] = (
                ours["images_per_second"] / row["images_per_second"]
            )
            goals[f"oaml_minus_kserve_p99_ms_c{level}"] = ours["p99_ms"] - row["p99_ms"]
        elif runtime.startswith("http server"):
            name = "server" if runtime == "http server" else "before"
            ratio = row["images_per_second"] / ort_b["images_per_second"]
            goals[f"{name}_c{level}_over_onnxruntime_b{batch}"] = ratio
    return {
        **goals,
        f"onnxruntime_over_pytorch_b{batch}": (
            ort_b["images_per_second"] / torch_b["images_per_second"]
        ),
        "server_c1_p99_minus_onnxruntime_b1_p99_ms": (
            server_1["p99_ms"] - ort_1["p99_ms"] if server_1 else None
        ),
    }


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown(result: dict) -> str:
    lines = [
        f"Model: {Path(result['model']).name} ({result['arch']}, input {result['input']}); "
        f"{result['threads']}",
        "",
        "| runtime | images per call | concurrency | images/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        request = f" ({row['request']})" if "request" in row else ""
        lines.append(
            f"| {row['runtime']} | {row['batch']}{request} | {row.get('concurrency', '')} | "
            f"{row['images_per_second']:.0f} | {_ms(row['p50_ms'])} | {_ms(row['p99_ms'])} |"
        )
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [
        f"| {k} | {v:.3f} |" if v is not None else f"| {k} | n/a |"
        for k, v in result["goals"].items()
    ]
    return "\n".join(lines) + "\n"


def bench_serve(
    checkpoint: str | Path,
    out_dir: str | Path,
    onnx: str | Path | None = None,
    batch: int = 32,
    concurrency: tuple[int, ...] = (1, 8, 32, 64),
    seconds: float = 10.0,
    threads: int | None = None,
    peer: str | None = None,
    peer_venv: Path | None = None,
    load: ServeLoad = ServeLoad(),
) -> dict:
    """Run all the measurements (the peer's too: `peer="kserve"`) and write `serve.json` and
    `serve.md` in `out_dir`."""
    from oaml.export.onnx import export_onnx
    from oaml.serving.detector import Detector, default_threads

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx = Path(onnx) if onnx else export_onnx(checkpoint, out_dir / "model.onnx").path
    onnx = onnx.resolve()  # a baseline server runs from its own folder
    info = Detector(onnx).info
    shape = (info.input_size, info.input_size, info.channels)
    batches = sorted({1, batch, load.images})
    if threads:
        import torch

        torch.set_num_threads(threads)
    rows = _pytorch_rows(Path(checkpoint), shape, batches, seconds)
    if peer not in (None, "kserve"):
        raise ValueError(f"unknown peer {peer!r}: the one peer is 'kserve'")
    if peer:
        from oaml.bench.peers import kserve_python

        peer_python = kserve_python(peer_venv)
    else:
        peer_python = None
    rows += _server_rows(
        onnx, shape, concurrency, seconds, load, threads, out_dir, peer_python,
        raw=lambda: _onnx_rows(onnx, shape, batches, seconds, threads),
    )  # fmt: skip
    result = {
        "model": str(onnx),
        "arch": info.arch,
        "input": list(shape),
        "threads": f"{os.cpu_count()} CPUs visible, {threads or default_threads()} threads used",
        "seconds_per_row": seconds,
        "load": asdict(load),
        "rows": rows,
        "goals": _goals(rows, batch),
    }
    if peer:
        from oaml.bench.peers import KSERVE_VERSION

        result["peer"] = {"name": "kserve", "version": KSERVE_VERSION}
    return write_results(out_dir, "serve.json", result)
