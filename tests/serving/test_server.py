"""The server as a real process: OIP v2 and /v1/score agree with onnxruntime and PyTorch,
malformed input gets a 4xx JSON error and the server keeps serving, load is batched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from oaml.models.checkpoint import load_checkpoint
from oaml.serving.detector import Detector
from oaml.serving.images import decode_image
from tests.serving.bodies import infer_json
from tests.serving.conftest import running_server

pytestmark = pytest.mark.slow


def _expected(tiny_onnx, tiny_checkpoint, files):
    detector = Detector(tiny_onnx)
    images = np.stack([decode_image(f.read_bytes(), 28, 1) for f in files])
    logits, energy, _ = detector.run(images)
    model, _, _ = load_checkpoint(tiny_checkpoint)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()).numpy()
    return images, detector, logits, energy, torch_logits


def test_oip_infer_and_score_agree_with_onnxruntime_and_pytorch(
    server, tiny_onnx, tiny_checkpoint, test_files
):
    images, detector, logits, energy, torch_logits = _expected(
        tiny_onnx, tiny_checkpoint, test_files
    )
    assert (torch_logits.argmax(1) == logits.argmax(1)).all()

    answer = httpx.post(f"{server.url}/v2/models/fmnist/infer", json=infer_json(images)).json()
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
    for row, expected in zip(scored, detector.decide(logits, energy, -energy), strict=True):
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


def test_concurrent_requests_are_batched(server):
    images = np.random.default_rng(6).integers(0, 256, (1, 28, 28, 1), dtype=np.uint8)
    body = json.dumps(infer_json(images))
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(32) as pool:
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
        other_scheme = {"Authorization": "Basic s3cret-token"}
        assert httpx.get(f"{proc.url}/v2/models/{name}", headers=other_scheme).status_code == 401
        for scheme in ("Bearer", "bearer", "BEARER"):  # RFC 7235: the scheme in any case
            good = {"Authorization": f"{scheme} s3cret-token"}
            meta = httpx.get(f"{proc.url}/v2/models/{name}", headers=good).json()
            assert meta["parameters"]["ood_threshold"] == 1000.0
    output = proc.stdout.read()
    assert "s3cret-token" not in output


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"OAML_SERVE_TOKEN": ""}, (), "empty"),
        ({"OAML_SERVE_TOKEN": "${OAML_TOKEN}"}, (), "placeholder"),
        ({"OAML_SERVE_TOKEN": "changeme"}, (), "placeholder"),
        ({}, ("--threshold", "nan"), "not a number"),
    ],
    ids=["empty token", "template token", "changeme", "nan threshold"],
)
def test_a_server_that_would_fail_open_refuses_to_start(tiny_onnx, env, args, message):
    """Set but no secret, or a threshold that flags nothing: an error at start, not 'auth off'
    or 'never OOD'."""
    exe = Path(sys.executable).with_name("oaml")
    started = subprocess.run(
        [str(exe), "serve", "--model", str(tiny_onnx), "--port", "1", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )  # fmt: skip
    assert started.returncode != 0 and message in started.stderr, started.stderr
    assert "Traceback" not in started.stderr


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
    body = json.dumps(infer_json(images))
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
            logits, _, _ = await service.score(np.zeros((1, 28, 28, 1), np.uint8))
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


def test_health_follows_the_model_readiness_by_a_real_check_liveness_after_errors(tiny_onnx):
    """Ready needs a recent success or a passing one-image check; a model failing in a row
    fails liveness (so Kubernetes restarts the pod) until it answers again."""
    import asyncio

    from oaml.serving.app import DetectorService, ServeSettings

    class FailingDetector(Detector):
        broken = False

        def run(self, images):
            if self.broken:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return super().run(images)

    detector = FailingDetector(tiny_onnx)
    settings = ServeSettings(max_failures_in_a_row=3, ready_recent_s=0.0)
    service = DetectorService(detector, settings)

    async def main():
        states = [(await service.check_ready(), service.live)]  # not started: not ready
        await service.batcher.start()
        service.ready = True
        states.append((await service.check_ready(), service.live))
        detector.broken = True
        for _ in range(2):
            with pytest.raises(RuntimeError):
                await service.score(np.zeros((1, 28, 28, 1), np.uint8))
        states.append((await service.check_ready(), service.live))  # the check is error 3
        detector.broken = False
        states.append((await service.check_ready(), service.live))
        await service.batcher.stop()
        return states

    assert asyncio.run(main()) == [(False, True), (True, True), (False, False), (True, True)]


def test_a_detector_exported_with_msp_serves_that_score(msp_onnx, test_files):
    """The served confidence is the graph's msp output, the decision its own threshold, and the
    metadata says which score it is."""
    from tests.serving.conftest import running_server

    detector = Detector(msp_onnx)
    images = np.stack([decode_image(f.read_bytes(), 28, 1) for f in test_files])
    _, _, confidence = detector.run(images)
    with running_server(str(msp_onnx), "--name", "msp") as proc:
        meta = httpx.get(f"{proc.url}/v2/models/msp").json()
        assert meta["parameters"]["ood_score"] == "msp"
        threshold = meta["parameters"]["ood_confidence_threshold"]
        assert threshold == detector.info.score_threshold and 0 < threshold < 1
        answer = httpx.post(f"{proc.url}/v2/models/msp/infer", json=infer_json(images)).json()
        outputs = {o["name"]: o for o in answer["outputs"]}
        np.testing.assert_allclose(outputs["confidence"]["data"], confidence, atol=1e-6)
        assert outputs["is_ood"]["data"] == (confidence < threshold).tolist()
        files = [("files", (f.name, f.read_bytes(), "image/png")) for f in test_files]
        scored = httpx.post(f"{proc.url}/v1/score", files=files).json()
    for row, conf in zip(scored, confidence, strict=True):
        assert 0 <= row["confidence"] <= 1 and row["confidence"] == pytest.approx(conf, abs=1e-6)
        assert row["is_ood"] == bool(conf < threshold)
