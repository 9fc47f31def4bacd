"""The server as a real process: OIP v2 and /v1/score agree with onnxruntime and PyTorch,
malformed input gets a 4xx JSON error and the server keeps serving, load is batched."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from oaml.models.checkpoint import load_checkpoint
from oaml.serving.detector import Detector
from oaml.serving.images import decode_image
from tests.serving.conftest import running_server

pytestmark = pytest.mark.slow


def _expected(tiny_onnx, tiny_checkpoint, files):
    detector = Detector(tiny_onnx)
    images = np.stack([decode_image(f.read_bytes(), 28, 1) for f in files])
    logits, energy = detector.run(images)
    model, _, _ = load_checkpoint(tiny_checkpoint)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()).numpy()
    return images, detector, logits, energy, torch_logits


def _infer_json(images: np.ndarray) -> dict:
    return {"inputs": [{"name": "images", "datatype": "UINT8", "shape": list(images.shape),
                        "data": images.reshape(-1).tolist()}]}  # fmt: skip


def test_oip_infer_and_score_agree_with_onnxruntime_and_pytorch(
    server, tiny_onnx, tiny_checkpoint, test_files
):
    images, detector, logits, energy, torch_logits = _expected(
        tiny_onnx, tiny_checkpoint, test_files
    )
    assert (torch_logits.argmax(1) == logits.argmax(1)).all()

    answer = httpx.post(f"{server.url}/v2/models/fmnist/infer", json=_infer_json(images)).json()
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["logits"]["shape"] == [len(images), 10]
    np.testing.assert_allclose(
        np.array(outputs["logits"]["data"]).reshape(-1, 10), torch_logits, atol=1e-4
    )
    np.testing.assert_allclose(outputs["energy"]["data"], energy, atol=1e-5)
    assert outputs["label"]["data"] == logits.argmax(1).tolist()
    assert outputs["is_ood"]["data"] == (energy > detector.info.threshold).tolist()

    files = [("files", (f.name, f.read_bytes(), "image/png")) for f in test_files]
    scored = httpx.post(f"{server.url}/v1/score", files=files).json()
    assert len(scored) == len(test_files)
    for row, expected in zip(scored, detector.decide(logits, energy), strict=True):
        assert set(row) >= {"label", "class_name", "confidence", "energy", "is_ood"}
        assert row["label"] == expected["label"] and row["class_name"] == expected["class_name"]
        assert row["energy"] == pytest.approx(expected["energy"], abs=1e-5)
        assert row["confidence"] == pytest.approx(-row["energy"])
        assert row["is_ood"] == expected["is_ood"]


def test_metadata_and_tritonclient_work_unchanged(server, tiny_onnx):
    import tritonclient.http as triton

    meta = httpx.get(f"{server.url}/v2/models/fmnist").json()
    assert meta["inputs"][0] == {"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, 1]}
    assert len(meta["parameters"]["class_names"]) == 10
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_ready() and client.is_model_ready("fmnist")
    images = np.random.default_rng(5).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    tensor = triton.InferInput("images", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)  # binary tensor extension, as tritonclient defaults to
    result = client.infer("fmnist", [tensor])
    np.testing.assert_allclose(result.as_numpy("energy"), Detector(tiny_onnx).run(images)[1],
                               atol=1e-5)  # fmt: skip
    assert result.as_numpy("is_ood").dtype == np.bool_


# PIL would hand PostScript to Ghostscript; the server accepts raster formats only.
EPS = ("x.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "application/postscript")


def _bomb_png() -> bytes:
    """A valid PNG header claiming 30000 x 30000 pixels (900 M) with almost no data."""
    import io

    buffer = io.BytesIO()
    Image.new("1", (30000, 30000)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_malformed_input_gets_4xx_json_and_the_server_keeps_serving(server, tmp_path):
    infer = f"{server.url}/v2/models/fmnist/infer"
    ok = np.zeros((1, 28, 28, 1), np.uint8)
    too_many = np.zeros((300, 2, 2, 1), np.uint8)
    cases = {
        "invalid json": dict(url=infer, content=b"{oops"),
        "no inputs": dict(url=infer, json={"inputs": []}),
        "wrong input name": dict(
            url=infer, json={"inputs": [{**_infer_json(ok)["inputs"][0], "name": "x"}]}
        ),
        "wrong datatype": dict(
            url=infer, json={"inputs": [{**_infer_json(ok)["inputs"][0], "datatype": "INT16"}]}
        ),
        "shape/data mismatch": dict(
            url=infer, json={"inputs": [{**_infer_json(ok)["inputs"][0], "shape": [2, 28, 28, 1]}]}
        ),
        "wrong channels": dict(url=infer, json=_infer_json(np.zeros((1, 4, 4, 3), np.uint8))),
        "not 4-d": dict(url=infer, json=_infer_json(np.zeros((28, 28), np.uint8))),
        "pixel out of range": dict(
            url=infer, json={"inputs": [{**_infer_json(ok)["inputs"][0], "data": [256] * 784}]}
        ),
        "too many images": dict(url=infer, json=_infer_json(too_many)),
        "unknown model": dict(url=f"{server.url}/v2/models/other/infer", json=_infer_json(ok)),
        "body too large": dict(url=infer, content=b"0" * (33 * 1024 * 1024)),
        "score without files": dict(url=f"{server.url}/v1/score", data={"x": "1"}),
        "score text not image": dict(
            url=f"{server.url}/v1/score", files=[("files", ("a.txt", b"hello", "text/plain"))]
        ),
        "score truncated png": dict(
            url=f"{server.url}/v1/score",
            files=[("files", ("t.png", _bomb_png()[:40], "image/png"))],
        ),
        "decompression bomb": dict(
            url=f"{server.url}/v1/score", files=[("files", ("bomb.png", _bomb_png(), "image/png"))]
        ),
        "json to score": dict(url=f"{server.url}/v1/score", json={"files": []}),
        "unknown version": dict(
            url=f"{server.url}/v2/models/fmnist/versions/9/infer", json=_infer_json(ok)
        ),
        "parameters not an object": dict(url=infer, json={**_infer_json(ok), "parameters": [1]}),
        "postscript upload": dict(
            url=f"{server.url}/v1/score",
            files=[
                (
                    "files",
                    (
                        "x.eps",
                        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
                        "application/postscript",
                    ),
                )
            ],
        ),
    }
    for kind, request in cases.items():
        url = request.pop("url")
        response = httpx.post(url, timeout=30, **request)
        assert 400 <= response.status_code < 500, (kind, response.status_code, response.text)
        error = response.json()["error"]
        assert isinstance(error, str) and error, kind
    assert httpx.get(f"{server.url}/v2/models/fmnist/nothing").status_code == 404
    # Still serving, and every failure was counted by status.
    assert httpx.post(infer, json=_infer_json(ok)).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'oaml_requests_total{code="400",endpoint="infer"}' in metrics
    assert 'oaml_requests_total{code="413",endpoint="infer"}' in metrics


def _multipart(files: list[tuple[str, bytes]], boundary: str = "oaml-test-boundary") -> bytes:
    parts = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files
    )
    return parts + f"--{boundary}--\r\n".encode()


def _one_bit_png(side: int) -> bytes:
    """A few KB on the wire, side x side pixels once decoded: memory is spent by pixels."""
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_requests_that_were_500s_or_partial_answers_are_4xx(server, test_files):
    """Exact bodies that once got a 500 or a 200 they should not have."""
    infer = f"{server.url}/v2/models/fmnist/infer"
    score = f"{server.url}/v1/score"
    good = _infer_json(np.zeros((1, 28, 28, 1), np.uint8))["inputs"][0]
    png = test_files[0].read_bytes()
    multipart = {"content-type": "multipart/form-data; boundary=oaml-test-boundary"}
    whole = _multipart([("a.png", png), ("b.png", png)])
    cases = {
        "65 dimensions": dict(url=infer, json={"inputs": [{**good, "shape": [1] * 65}]}),
        "zero beside huge": dict(
            url=infer, json={"inputs": [{**good, "shape": [0, 2**40, 2**40, 1], "data": []}]}
        ),
        "images twice": dict(url=infer, json={"inputs": [good, good]}),
        "fractions as UINT8": dict(url=infer, json={"inputs": [{**good, "data": [0.5] * 784}]}),
        "strings as FP32": dict(
            url=infer, json={"inputs": [{**good, "datatype": "FP32", "data": ["1"] * 784}]}
        ),
        "booleans as UINT8": dict(url=infer, json={"inputs": [{**good, "data": [True] * 784}]}),
        "truncated multipart": dict(
            url=score, content=whole[: len(whole) // 2 + 200], headers=multipart
        ),
        "6300 x 6300 1-bit png": dict(
            url=score, files=[("files", ("wide.png", _one_bit_png(6300)))]
        ),
        "pixel budget of a request": dict(
            url=score, files=[("files", (f"{i}.png", _one_bit_png(4096))) for i in range(5)]
        ),
        "multipart without boundary": dict(
            url=score, content=whole, headers={"content-type": "multipart/form-data"}
        ),
    }
    for kind, request in cases.items():
        response = httpx.post(request.pop("url"), timeout=30, **request)
        assert response.status_code == 400, (kind, response.status_code, response.text)
        assert len(response.text) < 1000 and response.json()["error"], kind
    # The same multipart body, whole, scores both files; a 20 MB file name is not echoed.
    answered = httpx.post(score, content=whole, headers=multipart, timeout=30)
    assert answered.status_code == 200 and len(answered.json()) == 2
    huge = httpx.post(score, files=[("files", ("n" * 20_000_000 + ".png", png))], timeout=60)
    assert huge.status_code in (200, 400) and len(huge.text) < 2000
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_concurrent_requests_are_batched(server):
    images = np.random.default_rng(6).integers(0, 256, (1, 28, 28, 1), dtype=np.uint8)
    body = json.dumps(_infer_json(images))
    with httpx.Client() as client, ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(
            lambda _: client.post(f"{server.url}/v2/models/fmnist/infer", content=body).status_code,
            range(256),
        ))  # fmt: skip
    assert set(codes) == {200}
    metrics = httpx.get(f"{server.url}/metrics").text
    values = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("oaml_batch_size_")
    }
    assert values["oaml_batch_size_sum"] / values["oaml_batch_size_count"] > 1.0
    assert 'oaml_batch_size_bucket{le="1.0"}' in metrics
    assert values['oaml_batch_size_bucket{le="1.0"}'] < values["oaml_batch_size_count"]


def test_bearer_token_auth_and_threshold_override(tiny_onnx):
    env = {"OAML_SERVE_TOKEN": "s3cret-token"}
    with running_server(str(tiny_onnx), "--threshold", "1000", env=env) as proc:
        name = tiny_onnx.stem
        assert httpx.get(f"{proc.url}/v2/health/ready").status_code == 200  # probes stay open
        assert httpx.get(f"{proc.url}/v2/models/{name}").status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.get(f"{proc.url}/v2/models/{name}", headers=wrong).status_code == 401
        good = {"Authorization": "Bearer s3cret-token"}
        meta = httpx.get(f"{proc.url}/v2/models/{name}", headers=good).json()
        assert meta["parameters"]["ood_threshold"] == 1000.0
    output = proc.stdout.read()
    assert "s3cret-token" not in output


def wait_until_received(url: str, count: int, timeout: float = 30) -> float:
    """Wait until the server has received `count` infer requests (answered or in flight) and
    return how many were still in flight: those are what a graceful shutdown must finish."""
    in_flight = 'oaml_requests_in_flight{endpoint="infer"}'
    done = 'oaml_requests_total{code="200",endpoint="infer"}'
    busy, deadline = 0.0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy, answered = _metric(url, in_flight), _metric(url, done)
        if busy + answered >= count:
            break
        time.sleep(0.002)
    return busy


def _metric(url: str, name: str) -> float:
    """The value of one sample line of the server's /metrics (0 when absent)."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_sigterm_finishes_in_flight_requests(tiny_onnx):
    images = np.zeros((250, 28, 28, 1), np.uint8)
    body = json.dumps(_infer_json(images))
    with running_server(str(tiny_onnx), "--max-batch", "8") as proc:
        url = f"{proc.url}/v2/models/{tiny_onnx.stem}/infer"
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(httpx.post, url, content=body, timeout=60) for _ in range(8)]
            busy = wait_until_received(proc.url, 8)
            proc.send_signal(signal.SIGTERM)
            codes = [f.result().status_code for f in futures]
        # uvicorn re-raises SIGTERM after its graceful shutdown: a clean exit by that signal.
        assert proc.wait(60) in (0, -signal.SIGTERM)
    assert busy >= 1, "no request was in flight at SIGTERM; the test proved nothing"
    assert codes == [200] * 8
    assert "Finished server process" in proc.stdout.read()


def test_the_serving_path_does_not_import_torch():
    code = (
        "import sys, oaml.serving.app, oaml.serving.server, oaml.serving.batch_score;"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_input_onnxruntime_refuses_is_a_400_and_the_model_keeps_serving(tiny_onnx):
    import asyncio

    from oaml.serving.app import DetectorService, ServeSettings
    from oaml.serving.oip import OipError

    service = DetectorService(Detector(tiny_onnx), ServeSettings())

    async def main():
        await service.batcher.start()
        try:
            with pytest.raises(OipError, match="the model refused the input") as refused:
                await service.score(np.zeros((1, 4, 4, 3), np.uint8))  # 3 channels, not 1
            logits, _ = await service.score(np.zeros((1, 28, 28, 1), np.uint8))
            return refused.value.status, logits.shape, service.batcher.alive
        finally:
            await service.batcher.stop()

    assert asyncio.run(main()) == (400, (1, 10), True)


def test_a_full_queue_answers_503_with_retry_after(tiny_onnx):
    import asyncio

    from oaml.serving.app import DetectorService, ServeSettings
    from oaml.serving.oip import OipError

    service = DetectorService(Detector(tiny_onnx), ServeSettings(max_queued_bytes=784))

    async def main():
        await service.batcher.start()
        try:
            image = np.zeros((1, 28, 28, 1), np.uint8)
            return await asyncio.gather(
                service.score(image), service.score(image), return_exceptions=True
            )
        finally:
            await service.batcher.stop()

    served, refused = asyncio.run(main())
    assert served[0].shape == (1, 10)
    assert isinstance(refused, OipError) and refused.status == 503
    assert refused.headers == {"retry-after": "1"}
