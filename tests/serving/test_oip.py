"""OIP v2 request parsing and answers, JSON and Triton's binary extension, without a server."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from oaml.serving.oip import OipError, infer_response, parse_infer


def _json_request(images: np.ndarray, datatype: str = "UINT8", **extra) -> bytes:
    tensor = {"name": "images", "datatype": datatype, "shape": list(images.shape),
              "data": images.reshape(-1).tolist()}  # fmt: skip
    return orjson.dumps({"inputs": [tensor], **extra})


def _binary_request(images: np.ndarray) -> tuple[bytes, str]:
    raw = images.tobytes()
    header = orjson.dumps(
        {"inputs": [{"name": "images", "datatype": "UINT8", "shape": list(images.shape),
                     "parameters": {"binary_data_size": len(raw)}}],
         "parameters": {"binary_data_output": True}}
    )  # fmt: skip
    return header + raw, str(len(header))


def test_json_and_binary_requests_give_the_same_images():
    images = np.random.default_rng(0).integers(0, 256, (3, 5, 4, 1), dtype=np.uint8)
    from_json = parse_infer(_json_request(images, id="r1"), None)
    assert from_json.id == "r1" and from_json.images.dtype == np.uint8
    np.testing.assert_array_equal(from_json.images, images)
    body, length = _binary_request(images)
    from_binary = parse_infer(body, length)
    np.testing.assert_array_equal(from_binary.images, images)
    assert from_binary.binary_default


def test_fp32_pixels_are_accepted_and_rounded():
    images = np.array([0.0, 254.6, 17.2, 255.0], dtype=np.float32).reshape(1, 2, 2, 1)
    parsed = parse_infer(_json_request(images, "FP32"), None)
    np.testing.assert_array_equal(parsed.images.reshape(-1), [0, 255, 17, 255])


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (orjson.dumps({"inputs": []}), "non-empty 'inputs'"),
        (
            orjson.dumps(
                {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1], "data": [1]}]}
            ),
            "unknown input 'pixels'",
        ),
        (
            orjson.dumps(
                {"inputs": [{"name": "images", "datatype": "INT8", "shape": [1], "data": [1]}]}
            ),
            "datatype 'INT8'",
        ),
        (
            orjson.dumps(
                {
                    "inputs": [
                        {
                            "name": "images",
                            "datatype": "UINT8",
                            "shape": [1, 2, 2, 1],
                            "data": [1, 2, 3],
                        }
                    ]
                }
            ),
            "3 values for shape",
        ),
        (
            orjson.dumps(
                {
                    "inputs": [
                        {
                            "name": "images",
                            "datatype": "UINT8",
                            "shape": [1, 1, 2, 1],
                            "data": [1, 300],
                        }
                    ]
                }
            ),
            "0..255",
        ),
        (
            orjson.dumps(
                {
                    "inputs": [
                        {
                            "name": "images",
                            "datatype": "UINT8",
                            "shape": [1, 1, 2, 1],
                            "data": ["a", "b"],
                        }
                    ]
                }
            ),
            "numbers",
        ),
        (
            orjson.dumps(
                {"inputs": [{"name": "images", "datatype": "UINT8", "shape": "2x2", "data": [1]}]}
            ),
            "shape list",
        ),
    ],
)
def test_malformed_requests_name_the_problem(body, words):
    with pytest.raises(OipError, match=words) as info:
        parse_infer(body, None)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"parameters": [1]}, "'parameters' must be an object"),
        ({"outputs": [{"name": ["logits"]}]}, "string 'name'"),
        ({"outputs": [{"name": "logits", "parameters": 5}]}, "'parameters' must be an object"),
        ({"outputs": [{"name": "probs"}]}, "unknown output"),
        ({"id": {"a": 1}}, "'id' must be a string"),
    ],
)
def test_odd_request_fields_are_400_not_500(change, words):
    body = orjson.loads(_json_request(np.zeros((1, 2, 2, 1), np.uint8)))
    with pytest.raises(OipError, match=words):
        parse_infer(orjson.dumps({**body, **change}), None, ("logits", "energy"))


@pytest.mark.parametrize(
    ("shape", "words"),
    [
        ([True, 2, 2, True], "non-negative integers"),
        ([4294967296, 4294967296, 28, 1], "more values than the size limit"),
        ([-1, 2, 2, 1], "non-negative integers"),
        ([1] * 65, r"shape \[N, H, W, C\]"),
        ([0, 2**40, 2**40, 1], r"shape \[N, H, W, C\]"),
        ([28, 28], r"shape \[N, H, W, C\]"),
    ],
)
def test_odd_shapes_are_400_not_500(shape, words):
    body = orjson.dumps(
        {"inputs": [{"name": "images", "datatype": "UINT8", "shape": shape, "data": []}]}
    )
    with pytest.raises(OipError, match=words):
        parse_infer(body, None)


def test_binary_size_mismatch_and_bad_header_length():
    images = np.zeros((1, 2, 2, 1), np.uint8)
    body, length = _binary_request(images)
    with pytest.raises(OipError, match="binary"):
        parse_infer(body[:-1], length)
    with pytest.raises(OipError, match="exceeds the body"):
        parse_infer(body, str(len(body) + 5))
    with pytest.raises(OipError, match="not a number"):
        parse_infer(body, "abc")


def test_response_json_and_binary_outputs_round_trip():
    images = np.zeros((2, 2, 2, 1), np.uint8)
    outputs = {
        "logits": np.arange(6, dtype=np.float32).reshape(2, 3),
        "energy": np.array([-1.5, 2.0], np.float32),
        "is_ood": np.array([False, True]),
    }
    parsed = parse_infer(_json_request(images, id="x"), None)
    body, headers = infer_response("m", "1", parsed, outputs)
    answer = orjson.loads(body)
    assert answer["id"] == "x" and headers["content-type"] == "application/json"
    assert answer["outputs"][0] == {"name": "logits", "datatype": "FP32", "shape": [2, 3],
                                    "data": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]}  # fmt: skip
    raw_body, length = _binary_request(images)
    body, headers = infer_response("m", "1", parse_infer(raw_body, length), outputs)
    split = int(headers["inference-header-content-length"])
    described = orjson.loads(body[:split])["outputs"]
    blob = body[split:]
    assert [o["parameters"]["binary_data_size"] for o in described] == [24, 8, 2]
    np.testing.assert_array_equal(np.frombuffer(blob[24:32], "<f4"), outputs["energy"])
    np.testing.assert_array_equal(np.frombuffer(blob[32:], np.bool_), outputs["is_ood"])
    with pytest.raises(OipError, match="unknown output"):
        bad = parse_infer(_json_request(images, outputs=[{"name": "probs"}]), None)
        infer_response("m", "1", bad, outputs)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"data": [0.5, 1, 2, 3]}, "whole numbers"),
        ({"datatype": "FP32", "data": ["1", "2", "3", "4"]}, "numbers only"),
        ({"data": [True, False, True, False]}, "numbers only"),
        ({"data": [1, None, 2, 3]}, "numbers only"),
        ({"data": [2**40, 1, 2, 3]}, "0..255"),
        ({"data": [10**30, 1, 2, 3]}, "cannot be represented using 64 bits"),
        ({"data": [-1.5e300, 1, 2, 3]}, "whole numbers|0..255"),
        ({"data": [[1, 2], [3, "4"]]}, "numbers only"),
        ({"data": "1234"}, "numbers only"),
        ({"data": {"a": 1}}, "numbers only"),
    ],
)
def test_values_numpy_would_coerce_are_refused(change, words):
    tensor = {"name": "images", "datatype": "UINT8", "shape": [1, 2, 2, 1], "data": [1, 2, 3, 4]}
    with pytest.raises(OipError, match=words):
        parse_infer(json.dumps({"inputs": [{**tensor, **change}]}).encode(), None)


def test_the_image_input_given_twice_is_refused_not_last_one_wins():
    tensor = orjson.loads(_json_request(np.zeros((1, 2, 2, 1), np.uint8)))["inputs"][0]
    with pytest.raises(OipError, match="more than once"):
        parse_infer(orjson.dumps({"inputs": [tensor, tensor]}), None)
