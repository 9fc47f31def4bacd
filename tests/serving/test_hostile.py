"""Hostile input against a real `oaml serve`: exact bodies, each with the exact status it must
get, the server still ready after all of them, and its peak memory bounded while requests built
to exhaust it run concurrently."""

from __future__ import annotations

import contextlib
import functools
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from tests.serving.bodies import MULTIPART, infer_json, multipart, png
from tests.serving.conftest import running_server

pytestmark = pytest.mark.slow

# The server under attack runs with the defaults except a short body timeout (so the slow-body
# case is quick) and small budgets of held bodies and of decode memory (so the bound is tight).
BODY_TIMEOUT_S = 2
HEAD_TIMEOUT_S = 2
DECODE_TIMEOUT_S = 0.3
BUFFERED_MB = 48
DECODE_MB = 128
# Peak RSS may grow at most this much over the idle server's while the memory attacks run: the
# two budgets, plus one JSON parse (about 10x its 8 MiB) and the allocator's slack.
RSS_GROWTH_BOUND_MB = BUFFERED_MB + DECODE_MB + 200

GOOD = infer_json(np.zeros((1, 28, 28, 1), np.uint8))["inputs"][0]


@functools.cache
def fmnist_png() -> bytes:
    return picture("PNG")


def picture(fmt: str, **options) -> bytes:
    """A 28 x 28 grey gradient in `fmt` (PIL's writer)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    gradient = np.tile(np.arange(0, 252, 9, dtype=np.uint8), (28, 1))
    Image.fromarray(gradient).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg_of_many_scans(copies: int) -> bytes:
    """A real progressive JPEG whose last scan is repeated `copies` times: the shape of the file
    whose scans keep a decoder busy (decoders accept the repeats with a warning)."""
    data = picture("JPEG", progressive=True, quality=90)
    last = data.rindex(b"\xff\xda")
    return data[:last] + data[last:-2] * copies + b"\xff\xd9"


def many_strip_tiff() -> bytes:
    """A TIFF of 28 one-row strips: the layout whose strip table Pillow expands before decoding."""
    return picture("TIFF", tiffinfo={278: 1})


def _oip(*inputs: dict, **extra) -> dict:
    return {"json": {"inputs": list(inputs), **extra}}


def _binary(header: dict, blob: bytes, split: str | bytes | None = None) -> dict:
    head = orjson.dumps(header)
    length = split if split is not None else str(len(head))
    return {
        "content": head + blob,
        "headers": {
            b"inference-header-content-length": length.encode() if isinstance(length, str)
            else length,
            b"content-type": b"application/octet-stream",
        },
    }  # fmt: skip


def _digits(style: str) -> bytes:
    """The right header length, written with a sign ("+") or in another script's digits (from
    its zero, e.g. U+0660): int() reads both, HTTP does not."""
    length = str(len(orjson.dumps({"inputs": [_BINARY_INPUT]})))
    if style == "+":
        return f"+{length}".encode()
    return "".join(chr(ord(style) + int(d)) for d in length).encode()


def _files(*files: tuple[str, bytes]) -> dict:
    return {"content": multipart(list(files)), "headers": MULTIPART}


_BINARY_INPUT = {k: v for k, v in GOOD.items() if k != "data"} | {
    "parameters": {"binary_data_size": 784}
}


def _cases() -> list[tuple[str, str, str, dict, int]]:
    """(case, method, endpoint, httpx arguments, expected status)."""
    binary_input = _BINARY_INPUT
    whole = multipart([("a.png", fmnist_png()), ("b.png", fmnist_png())])
    infer, score = "infer", "score"
    one, rgb, many = (
        infer_json(np.zeros(s, np.uint8)) for s in [(1, 28, 28, 1), (1, 4, 4, 3), (257, 1, 1, 1)]
    )
    return [
        # OIP v2 JSON
        ("not json", "POST", infer, {"content": b"{oops"}, 400),
        ("json array", "POST", infer, {"json": [GOOD]}, 400),
        ("no inputs", "POST", infer, _oip(), 400),
        ("inputs not objects", "POST", infer, _oip(1, 2), 400),
        ("unknown input name", "POST", infer, _oip({**GOOD, "name": "x"}), 400),
        ("images twice", "POST", infer, _oip(GOOD, GOOD), 400),
        ("INT16 datatype", "POST", infer, _oip({**GOOD, "datatype": "INT16"}), 400),
        ("65 dimensions", "POST", infer, _oip({**GOOD, "shape": [1] * 65}), 400),
        ("zero beside huge", "POST", infer,
         _oip({**GOOD, "shape": [0, 2**40, 2**40, 1], "data": []}), 400),
        ("negative dimension", "POST", infer, _oip({**GOOD, "shape": [-1, 28, 28, 1]}), 400),
        ("booleans in shape", "POST", infer, _oip({**GOOD, "shape": [True, 28, 28, 1]}), 400),
        ("2**70 values claimed", "POST", infer,
         _oip({**GOOD, "shape": [2**35, 2**35, 1, 1]}), 400),
        ("fractions as UINT8", "POST", infer, _oip({**GOOD, "data": [0.5] * 784}), 400),
        ("strings as FP32", "POST", infer,
         _oip({**GOOD, "datatype": "FP32", "data": ["1"] * 784}), 400),
        ("booleans as UINT8", "POST", infer, _oip({**GOOD, "data": [True] * 784}), 400),
        ("nulls as data", "POST", infer, _oip({**GOOD, "data": [None] * 784}), 400),
        ("ragged data", "POST", infer, _oip({**GOOD, "data": [[1, 2], [3]]}), 400),
        ("pixel 256", "POST", infer, _oip({**GOOD, "data": [256] * 784}), 400),
        ("fewer values than the shape", "POST", infer, _oip({**GOOD, "data": [0] * 783}), 400),
        ("three channels", "POST", infer, {"json": rgb}, 400),
        ("257 images", "POST", infer, {"json": many}, 400),
        ("unknown output", "POST", infer, _oip(GOOD, outputs=[{"name": "secret"}]), 400),
        ("parameters a list", "POST", infer, _oip(GOOD, parameters=[1]), 400),
        ("id a number", "POST", infer, _oip(GOOD, id=7), 400),
        ("binary_data a string", "POST", infer,
         _oip(GOOD, outputs=[{"name": "energy", "parameters": {"binary_data": "false"}}]), 400),
        ("binary_data_output a number", "POST", infer,
         _oip(GOOD, parameters={"binary_data_output": 0}), 400),
        ("outputs an object", "POST", infer, _oip(GOOD, outputs={}), 400),
        ("outputs a string", "POST", infer, _oip(GOOD, outputs="energy"), 400),
        ("20000 unknown outputs", "POST", infer,
         _oip(GOOD, outputs=[{"name": f"{i:0>40}"} for i in range(20000)]), 400),
        ("json over 8 MiB", "POST", infer,
         {"content": b"[" + b"0," * (4 * 1024 * 1024 + 8) + b"0]",
          "headers": {"content-type": "application/json"}}, 413),
        ("body over 32 MiB", "POST", infer, {"content": b"0" * (33 * 1024 * 1024)}, 413),
        ("json over 8 MiB, sent as text/plain", "POST", infer,
         {"content": b"[" + b"0," * (4 * 1024 * 1024 + 8) + b"0]",
          "headers": {"content-type": "text/plain"}}, 413),
        # OIP v2 binary tensor extension
        ("header length not a number", "POST", infer,
         _binary({"inputs": [binary_input]}, bytes(784), split="12x"), 400),
        ("header length past the body", "POST", infer,
         _binary({"inputs": [binary_input]}, bytes(784), split="999999"), 400),
        ("binary size past the data", "POST", infer,
         _binary({"inputs": [binary_input]}, bytes(100)), 400),
        ("bytes after the last input", "POST", infer,
         _binary({"inputs": [binary_input]}, bytes(800)), 400),
        ("header length in other digits", "POST", infer,
         _binary({"inputs": [binary_input]}, bytes(784), split=_digits("\u0660")), 400),
        ("header length with a sign", "POST", infer,
         _binary({"inputs": [binary_input]}, bytes(784), split=_digits("+")), 400),
        ("binary request of 9 MB JSON", "POST", infer,
         _binary({"inputs": [binary_input], "id": "x" * (9 << 20)}, bytes(784)), 413),
        ("header length not UTF-8", "POST", infer,
         _binary({"inputs": [binary_input]}, bytes(784), split=b"\xff\xfe"), 400),
        # Routing
        ("unknown model", "POST", "/v2/models/other/infer", {"json": one}, 404),
        ("20 KB model name", "POST", f"/v2/models/{'m' * 20_000}/infer", {"json": one}, 404),
        ("20 KB version", "POST", f"/v2/models/fmnist/versions/{'9' * 20_000}/infer",
         {"json": one}, 404),
        ("20 KB name, metadata", "GET", f"/v2/models/{'m' * 20_000}", {}, 404),
        ("unknown version", "POST", "/v2/models/fmnist/versions/9/infer", _oip(GOOD), 404),
        ("unknown route", "GET", "/v2/models/fmnist/nothing", {}, 404),
        ("GET on infer", "GET", infer, {}, 405),
        # Bodies where nothing reads one: refused unread, never charged to the body budget
        ("body on the ready probe", "GET", "/v2/health/ready", {"content": bytes(1 << 20)}, 400),
        ("body on metrics", "GET", "/metrics", {"content": b"x"}, 400),
        ("body on metadata", "GET", "/v2/models/fmnist", {"content": b"{}"}, 400),
        ("chunked body on GET", "GET", "/v2/models/fmnist",
         {"content": iter([b"a", b"b"])}, 400),
        ("body on POST to live", "POST", "/v2/health/live", {"content": b"x"}, 400),
        # /v1/score
        ("json to score", "POST", score, {"json": {"files": []}}, 400),
        ("multipart without boundary", "POST", score,
         {"content": whole, "headers": {"content-type": "multipart/form-data"}}, 400),
        ("truncated multipart", "POST", score,
         {"content": whole[: len(whole) // 2 + 200], "headers": MULTIPART}, 400),
        ("garbage after the boundary line", "POST", score,
         {"content": b"--oaml-test-boundary\r\nno headers here", "headers": MULTIPART}, 400),
        ("no files field", "POST", score,
         {"data": {"x": "1"}, "files": {"other": ("a.png", fmnist_png())}}, 400),
        ("files as text", "POST", score, {"data": {"files": "not a file"}}, 400),
        ("text file", "POST", score, _files(("a.txt", b"hello")), 400),
        ("truncated png", "POST", score, _files(("t.png", fmnist_png()[:40])), 400),
        ("postscript", "POST", score,
         _files(("x.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")), 400),
        ("tiff: strips expanded before any budget", "POST", score,
         _files(("strips.tif", many_strip_tiff())), 400),
        ("bmp: RLE decodes in Python", "POST", score, _files(("a.bmp", picture("BMP"))), 400),
        ("ppm: decodes in Python", "POST", score, _files(("a.ppm", picture("PPM"))), 400),
        ("jpeg of 40 scans", "POST", score, _files(("s.jpg", jpeg_of_many_scans(31))), 400),
        ("30000 x 30000 bomb", "POST", score, _files(("bomb.png", png(30000, 30000))), 400),
        ("6300 x 6300 1-bit png", "POST", score, _files(("wide.png", png(6300, 6300))), 400),
        ("6300 x 6300 palette png", "POST", score,
         _files(("wide.png", png(6300, 6300, 1, 3))), 400),
        ("4096 x 4096 16-bit png: decode memory", "POST", score,
         _files(("deep.png", png(4096, 4096, 16))), 400),
        ("4096 x 4096 palette png: decode memory", "POST", score,
         _files(("wide.png", png(4096, 4096, 1, 3))), 400),
        ("pixel budget of a request", "POST", score,
         _files(*[(f"{i}.png", png(4096, 4096)) for i in range(5)]), 400),
        ("257 files", "POST", score,
         _files(*[(f"{i}.png", fmnist_png()) for i in range(257)]), 400),
        ("20 MB file name", "POST", score,
         _files(("n" * 20_000_000 + ".png", fmnist_png())), 400),
    ]  # fmt: skip


CASES = _cases()


@pytest.fixture(scope="module")
def hostile(tiny_onnx):
    with running_server(
        str(tiny_onnx), "--name", "fmnist", "--body-timeout", str(BODY_TIMEOUT_S),
        "--header-timeout", str(HEAD_TIMEOUT_S),
        "--max-buffered-mb", str(BUFFERED_MB), "--max-decode-mb", str(DECODE_MB),
    ) as proc:  # fmt: skip
        yield proc


def _url(server, endpoint: str) -> str:
    paths = {"infer": "/v2/models/fmnist/infer", "score": "/v1/score"}
    return server.url + paths.get(endpoint, endpoint)


def test_the_suite_holds_enough_cases():
    assert len(CASES) >= 24 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize(("method", "endpoint", "request_args", "status"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])  # fmt: skip
def test_hostile_request_gets_its_status(hostile, method, endpoint, request_args, status):
    response = httpx.request(method, _url(hostile, endpoint), timeout=60, **request_args)
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    # A clear message, never an echo of the input (the 20 MB name, the huge shape).
    assert isinstance(error, str) and error and len(response.content) < 1000


def _raw_request(url: str, head: str, body: bytes, wait: float) -> tuple[socket.socket, float]:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(head.encode() + body)
    time.sleep(wait)
    return sock, time.monotonic()


def _status_of(sock: socket.socket) -> int:
    reply = sock.recv(4096).decode("latin-1")
    return int(reply.split(" ", 2)[1])


def test_a_body_that_never_arrives_whole_gets_408(hostile):
    head = (
        "POST /v2/models/fmnist/infer HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    sock, sent = _raw_request(hostile.url, head, b'{"inputs": [', 0)
    with sock:
        assert _status_of(sock) == 408
    assert time.monotonic() - sent < BODY_TIMEOUT_S + 5


def _head_status(url: str, head: bytes, pause: float = 0.0) -> tuple[int, float]:
    """The status a raw request head gets (sent in one piece, or byte by byte `pause` apart),
    and the seconds it took; the connection must be closed after it."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        with contextlib.suppress(OSError):  # the server may close while this still sends
            if pause:
                for byte in head:
                    sock.sendall(bytes([byte]))
                    time.sleep(pause)
            else:
                sock.sendall(head)
        reply = b""
        while chunk := sock.recv(65536):  # until the server closes
            reply += chunk
    return int(reply.split(b" ", 2)[1]), time.monotonic() - started


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /v2/health/ready HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n", 431),
        (b"GET /v2/models/" + b"m" * 200_000 + b" HTTP/1.1\r\n", 431),
        (b"GET /v2/health/ready HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 8000, 431),
        (b"GET /v2/health/ready HTTP/1.1\r\nX-Bytes: \xff\xfe\r\n", 200),
    ],
    ids=["one 70 KB header", "200 KB URL", "8000 headers", "a non-UTF-8 header value"],
)
def test_a_request_head_is_bounded_in_size(hostile, head, status):
    """httptools would grow the head without limit on the event loop: 431 past 64 KiB, and the
    connection closed; a head within it (any bytes in its values) is served."""
    got, _ = _head_status(hostile.url, head + b"Host: x\r\nConnection: close\r\n\r\n")
    assert got == status
    assert httpx.get(f"{hostile.url}/v2/health/ready", timeout=10).status_code == 200


def test_a_head_that_never_arrives_is_closed(hostile):
    """Connected and silent, or trickling its head: 408 and closed after the head timeout."""
    silent, seconds = _head_status(hostile.url, b"")
    assert silent == 408 and seconds < HEAD_TIMEOUT_S + 3
    trickle = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    slow, seconds = _head_status(hostile.url, trickle, pause=0.05)
    assert slow == 408 and seconds < HEAD_TIMEOUT_S + 3


@pytest.fixture(scope="module")
def limited(tiny_onnx):
    """A server at --max-connections 8 and the default body timeout (30 s)."""
    with running_server(str(tiny_onnx), "--name", "fmnist", "--max-connections", "8",
                        "--header-timeout", str(HEAD_TIMEOUT_S),
                        "--decode-timeout", str(DECODE_TIMEOUT_S)) as server:  # fmt: skip
        yield server


def slow_jpeg() -> bytes:
    """A 4096 x 4096 progressive JPEG whose largest refinement scan is repeated to 31 scans (under
    the scan limit): about 24 MB that take about a second to decode here."""
    import io

    from PIL import Image

    ramp = np.add.outer(np.arange(4096), np.arange(4096)) % 256
    noisy = ramp + np.random.default_rng(0).normal(0, 12, ramp.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
        buffer, "JPEG", progressive=True, quality=75
    )
    data = buffer.getvalue()
    starts = [m.start() for m in re.finditer(b"\xff\xda", data)]
    biggest = max(range(len(starts) - 1), key=lambda k: starts[k + 1] - starts[k])
    scan = data[starts[biggest] : starts[biggest + 1]]
    return data[: starts[-1]] + scan * 25 + data[starts[-1] :]


def test_a_decode_past_its_time_is_stopped_and_the_next_one_served(limited):
    """The decoding process is killed at --decode-timeout (400, naming the file); a fresh one
    decodes the next upload."""
    answer = httpx.post(f"{limited.url}/v1/score", timeout=60, **_files(("slow.jpg", slow_jpeg())))
    assert answer.status_code == 400 and "slow.jpg: decoding took longer" in answer.json()["error"]
    good = httpx.post(f"{limited.url}/v1/score", timeout=60, **_files(("a.png", fmnist_png())))
    assert good.status_code == 200, good.text


def test_probes_answer_while_idle_sockets_hold_every_connection(limited):
    """Eight silent sockets at --max-connections 8: the model's routes get 503 (uvicorn's
    limit), the probes still 200; after the head timeout the sockets are closed and all is 200."""
    host, port = limited.url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port))) for _ in range(8)]
    try:
        time.sleep(0.3)
        assert httpx.get(f"{limited.url}/v2/models/fmnist", timeout=10).status_code == 503
        for probe in ("/v2/health/ready", "/v2/health/live"):
            assert httpx.get(limited.url + probe, timeout=10).status_code == 200
        time.sleep(HEAD_TIMEOUT_S + 1)
        assert httpx.get(f"{limited.url}/v2/models/fmnist", timeout=10).status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_a_slow_upload_gets_408_long_before_the_body_timeout(limited):
    """1 KB every 0.3 s (3 KiB/s, under the 64 KiB/s floor): 408 a little after the 2 s grace,
    not after the 30 s body timeout; the slot and its budget are free again."""
    head = (
        "POST /v2/models/fmnist/infer HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    host, port = limited.url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        sock.settimeout(0.3)
        reply = b""
        while not reply and time.monotonic() - started < 20:
            with contextlib.suppress(OSError):
                sock.sendall(b" " * 1000)
            with contextlib.suppress(TimeoutError):
                reply = sock.recv(4096)
    assert reply.split(b" ", 2)[1] == b"408", reply[:200]
    assert time.monotonic() - started < 6
    one = infer_json(np.zeros((1, 28, 28, 1), np.uint8))
    assert httpx.post(f"{limited.url}/v2/models/fmnist/infer", json=one).status_code == 200


def test_bodies_past_the_servers_budget_get_503_with_retry_after(hostile):
    """One slow client holds most of the budget; the next body over the rest is turned away."""
    held, other = 28 * 1024 * 1024, 24 * 1024 * 1024  # each under the 32 MiB body limit
    head = (
        "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {held + 1}\r\n\r\n"
    )
    sock, _ = _raw_request(hostile.url, head, bytes(held), 0.5)  # one byte short: it waits
    with sock:
        refused = httpx.post(_url(hostile, "score"), content=bytes(other),
                             headers=MULTIPART, timeout=30)  # fmt: skip
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
    # The slow client's bytes are released when it times out: the same body now passes the
    # guard and gets the handler's answer.
    time.sleep(BODY_TIMEOUT_S + 0.5)
    later = httpx.post(_url(hostile, "score"), content=bytes(other), headers=MULTIPART, timeout=30)
    assert later.status_code == 400 and "multipart" in later.json()["error"]


def _memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _attacks(server) -> list[tuple[str, dict, set[int]]]:
    """(endpoint, request, statuses it may get): requests built to cost memory, not bytes.
    Big bodies may also time out (408): 20 uploads at once share two cores and a 2 s limit."""
    big_binary = _binary(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "UINT8",
                    "shape": [38000, 28, 28, 1],
                    "parameters": {"binary_data_size": 38000 * 784},
                }
            ]
        },
        bytes(38000 * 784),
    )  # fmt: skip  (29.8 MB held, then refused: more than 256 images)
    big_json = {
        "content": orjson.dumps(
            {"inputs": [{**GOOD, "shape": [5300, 28, 28, 1], "data": [7] * (5300 * 784)}]}
        ),
        "headers": {"content-type": "application/json"},
    }  # 8.3 MB of JSON, 4.2 M numbers, each parsed then refused: more than 256 images
    decodes = _files(*[(f"{i}.png", png(2048, 2048, 1, 3)) for i in range(3)])  # 55 MB each
    return (
        [("infer", big_binary, {400, 408, 503})] * 8
        + [("infer", big_json, {400, 408, 503})] * 4
        + [("score", decodes, {200, 503})] * 8
    )


def test_memory_attacks_stay_under_the_bound_and_the_server_stays_ready(hostile):
    pid = hostile.pid
    idle_kb = _memory_kb(pid, "VmRSS")
    with contextlib.suppress(OSError):  # the peak from now on (Linux >= 4.0), else so far
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    attacks = _attacks(hostile)

    def send(attack):
        endpoint, request, allowed = attack
        response = httpx.post(_url(hostile, endpoint), timeout=120, **request)
        return response.status_code, allowed

    latencies: list[float] = []
    done = threading.Event()

    def probe() -> None:  # the kubelet's view while the attacks are parsed and decoded
        with httpx.Client(timeout=30) as client:
            while not done.is_set():
                started = time.monotonic()
                client.get(f"{hostile.url}/v2/health/live")
                latencies.append(time.monotonic() - started)
                time.sleep(0.1)

    prober = threading.Thread(target=probe)
    prober.start()
    with ThreadPoolExecutor(len(attacks)) as pool:
        answers = list(pool.map(send, attacks))
    done.set()
    prober.join()
    print(f"probe latency under attack: max {max(latencies):.3f} s over {len(latencies)} probes")
    # Big bodies are parsed off the event loop: every probe answers within a kubelet's default
    # probe timeout (timeoutSeconds 1), even with another test training on the same two cores.
    assert max(latencies) < 1.0
    peak_kb = _memory_kb(pid, "VmHWM")
    wrong = [(status, allowed) for status, allowed in answers if status not in allowed]
    assert not wrong, wrong
    assert any(status == 200 for status, _ in answers), "no decode attack got through"
    growth_mb = (peak_kb - idle_kb) / 1024
    print(f"peak RSS growth under attack: {growth_mb:.0f} MiB (bound {RSS_GROWTH_BOUND_MB})")
    assert growth_mb < RSS_GROWTH_BOUND_MB
    assert httpx.get(f"{hostile.url}/v2/health/ready", timeout=10).status_code == 200
    assert httpx.get(f"{hostile.url}/v2/health/live", timeout=10).status_code == 200
    ok = httpx.post(_url(hostile, "infer"), json=infer_json(np.zeros((2, 28, 28, 1), np.uint8)))
    assert ok.status_code == 200


def test_the_served_formats_are_scored_and_others_named(hostile):
    """PNG, JPEG (progressive too), WebP and GIF are scored; a refusal names those four."""
    files = [("a.png", picture("PNG")), ("b.jpg", picture("JPEG")), ("c.webp", picture("WEBP")),
             ("d.gif", picture("GIF")), ("e.jpg", picture("JPEG", progressive=True)),
             ("f.jpg", jpeg_of_many_scans(20))]  # fmt: skip
    answer = httpx.post(_url(hostile, "score"), timeout=30, **_files(*files))
    assert answer.status_code == 200, answer.text
    assert [a["file"] for a in answer.json()] == [name for name, _ in files]
    refused = httpx.post(_url(hostile, "score"), timeout=30, **_files(("x.tif", picture("TIFF"))))
    assert "(PNG, JPEG, WEBP, GIF)" in refused.json()["error"]


def test_every_refusal_is_counted_by_status(hostile):
    """One refusal of each kind, then each is in the request counter by status and endpoint
    (whichever other tests of this module ran on the same server before)."""
    as_json = {"content-type": "application/json"}
    refusals = [
        (_url(hostile, "infer"), {"content": b"{not json", "headers": as_json}, 400),
        (_url(hostile, "infer"), {"content": b"0" * (33 * 1024 * 1024)}, 413),
        (f"{hostile.url}/v2/models/other/infer", {"json": {"inputs": []}}, 404),
        (_url(hostile, "score"), {"content": b"x", "headers": {"content-type": "text/plain"}}, 400),
    ]
    for url, request, status in refusals:
        assert httpx.post(url, timeout=30, **request).status_code == status, url
    metrics = httpx.get(f"{hostile.url}/metrics").text
    for code, endpoint in [("400", "infer"), ("413", "infer"), ("404", "infer"), ("400", "score")]:
        assert f'oaml_requests_total{{code="{code}",endpoint="{endpoint}"}}' in metrics
