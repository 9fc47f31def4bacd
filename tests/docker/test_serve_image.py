"""The serving image as a container: built with `make serve-image`, run read-only as uid 1000
with the exported detector mounted read-only, driven over HTTP as a deployment would be.

`make test` builds the CPU flavor (small, quick); `make test-images` also runs every test on the
default GPU flavor (onnxruntime-gpu and its CUDA wheels), which must serve on a machine without a
GPU too (it falls back to the CPU provider)."""

from __future__ import annotations

import json
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from oaml.serving.detector import Detector
from oaml.serving.images import decode_image
from tests.docker import engine as eng
from tests.serving.bodies import infer_json
from tests.serving.conftest import free_port
from tests.serving.test_server import wait_until_received

pytestmark = pytest.mark.slow

# Upper bounds that catch a heavy dependency sneaking in (torch alone is several GB).
SIZE_LIMIT = {"cpu": 1.0e9, "gpu": 4.5e9}
FLAVORS = [pytest.param("cpu", id="cpu"), pytest.param("gpu", id="gpu", marks=pytest.mark.images)]


@pytest.fixture(scope="module", params=FLAVORS)
def image(request):
    engine = eng.require_engine()
    seconds = eng.built(engine, "serve-image", SERVE_FLAVOR=request.param)
    name = eng.serve_image(request.param)
    print(f"\n{name}: built in {seconds:.0f} s, {engine.image_size(name) / 1e6:.0f} MB")
    return engine, name, request.param


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_onnx) -> Path:
    """A folder with the detector that uid 1000 may read, as a mounted volume would be (pytest's
    own temporary folders are private to the user running the tests)."""
    folder = tmp_path_factory.mktemp("models")
    folder.chmod(0o755)
    shutil.copy(tiny_onnx, folder / tiny_onnx.name)
    (folder / tiny_onnx.name).chmod(0o644)
    return folder


@pytest.fixture(scope="module")
def served(image, models, tiny_onnx):
    """The container serving the tiny detector; yields (engine, container id, base URL)."""
    engine, name, _ = image
    port = free_port()
    options = (
        "--read-only", "--tmpfs", "/tmp", "--user", "1000:1000", "-v", f"{models}:/models:ro",
    )  # fmt: skip
    args = ("--model", f"/models/{tiny_onnx.name}", "--name", "fmnist",
            "--host", "127.0.0.1", "--port", str(port), "--device", "auto")  # fmt: skip
    with eng.running(engine, name, *args, options=options) as container:
        url = f"http://127.0.0.1:{port}"
        wait_ready(engine, container, url)
        yield engine, container, url


def wait_ready(engine, container: str, url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        state = engine.run("inspect", "--format", "{{.State.Running}}", container, check=False)
        if state.stdout.strip() == "false":
            break
        time.sleep(0.3)
    raise AssertionError(f"the container never became ready:\n{eng.logs(engine, container)}")


def test_image_runs_as_uid_1000_without_torch_and_stays_small(image):
    engine, name, flavor = image
    config = engine.inspect(name)["Config"]
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["oaml", "serve"]
    probe = (
        "import importlib.util as u, onnxruntime as ort;"
        "print(u.find_spec('torch') is None, ort.get_available_providers())"
    )
    out = engine.run("run", "--rm", "--entrypoint", "python", name, "-c", probe).stdout
    assert out.startswith("True"), out
    assert ("CUDAExecutionProvider" in out) == (flavor == "gpu"), out
    size = engine.image_size(name)
    assert size < SIZE_LIMIT[flavor], f"{name} is {size / 1e9:.2f} GB"
    # The Triton pods' init container runs this image's `oaml registry fetch-triton`: there,
    # and failing closed on a malformed pin before reaching MLflow.
    fetch = engine.run(
        "run", "--rm", "--entrypoint", "oaml", name, "registry", "fetch-triton", "models:/m/1",
        "--out", "/tmp/m", "--sha256", "unset", check=False,
    )  # fmt: skip
    assert fetch.returncode == 2 and "is not a SHA-256" in fetch.stderr, fetch.stderr


def test_health_metadata_and_tritonclient_infer(served, tiny_onnx):
    import tritonclient.http as triton

    _, _, url = served
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    meta = httpx.get(f"{url}/v2/models/fmnist").json()
    assert meta["inputs"][0]["name"] == "images" and meta["inputs"][0]["datatype"] == "UINT8"
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_ready() and client.is_model_ready("fmnist")
    images = np.random.default_rng(11).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    tensor = triton.InferInput("images", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    result = client.infer("fmnist", [tensor])
    logits, energy, _ = Detector(tiny_onnx).run(images)
    np.testing.assert_allclose(result.as_numpy("energy"), energy, atol=1e-4)
    np.testing.assert_array_equal(result.as_numpy("label"), logits.argmax(1))


def test_score_files_match_the_host_detector(served, tiny_onnx, test_files):
    _, _, url = served
    files = [("files", (f.name, f.read_bytes(), "image/png")) for f in test_files]
    answer = httpx.post(f"{url}/v1/score", files=files, timeout=60)
    assert answer.status_code == 200, answer.text
    rows = answer.json()
    assert len(rows) == len(test_files)
    detector = Detector(tiny_onnx)
    images = np.stack([decode_image(f.read_bytes(), 28, 1) for f in test_files])
    logits, energy, _ = detector.run(images)
    assert [r["label"] for r in rows] == logits.argmax(1).tolist()
    np.testing.assert_allclose([r["energy"] for r in rows], energy, atol=1e-4)
    assert [r["is_ood"] for r in rows] == (energy > detector.info.threshold).tolist()


def test_bad_requests_get_4xx_json_and_the_container_keeps_serving(served):
    _, _, url = served
    bad = [
        httpx.post(f"{url}/v2/models/fmnist/infer", content=b"{not json"),
        httpx.post(f"{url}/v2/models/nope/infer", json={"inputs": []}),
        httpx.post(f"{url}/v1/score", files=[("files", ("x.png", b"not an image", "image/png"))]),
    ]
    for answer in bad:
        assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
        assert "error" in answer.json()
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200


def test_sigterm_drains_in_flight_requests(image, models, tiny_onnx):
    """SIGTERM to the container (what the kubelet sends) finishes the requests in flight."""
    engine, name, _ = image
    port = free_port()
    options = ("--read-only", "--tmpfs", "/tmp", "-v", f"{models}:/models:ro")
    args = ("--model", f"/models/{tiny_onnx.name}", "--host", "127.0.0.1",
            "--port", str(port), "--max-batch", "8", "--device", "cpu")  # fmt: skip
    body = json.dumps(infer_json(np.zeros((250, 28, 28, 1), np.uint8)))
    with eng.running(engine, name, *args, options=options) as container:
        url = f"http://127.0.0.1:{port}"
        wait_ready(engine, container, url)
        infer = f"{url}/v2/models/{tiny_onnx.stem}/infer"
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(httpx.post, infer, content=body, timeout=60) for _ in range(8)]
            busy = wait_until_received(url, 8)
            engine.run("kill", "--signal", "TERM", container)
            codes = [f.result().status_code for f in futures]
        status = engine.run("wait", container, timeout=60).stdout.strip()
        output = eng.logs(engine, container)
    assert busy >= 1, "no request was in flight at SIGTERM; the test proved nothing"
    assert codes == [200] * 8
    assert status in ("0", str(128 + signal.SIGTERM)), output
    assert "Finished server process" in output
