"""Open Inference Protocol v2 (KServe / Triton) request parsing and response building.

JSON tensors and Triton's binary tensor extension (the JSON header's length in the
`Inference-Header-Content-Length` header, raw little-endian tensor bytes after it) are both
accepted, so `tritonclient.http` works unchanged: it sends and asks for binary by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import simdjson

from oaml.contract import INPUT_NAME

HEADER_LENGTH = "inference-header-content-length"
DATATYPES: dict[str, np.dtype] = {
    "UINT8": np.dtype(np.uint8),
    "FP32": np.dtype("<f4"),
    "INT64": np.dtype("<i8"),
    "BOOL": np.dtype(np.bool_),
}
ACCEPTED_INPUT_TYPES = ("UINT8", "FP32")
WHERE = f"input {INPUT_NAME!r}"  # how error messages name the image tensor


class OipError(ValueError):
    """A malformed or unsupported request: answered with `status` and {"error": message}."""

    def __init__(
        self, message: str, status: int = 400, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}


@dataclass
class InferRequest:
    images: np.ndarray  # uint8 [N, H, W, C]
    id: str | None = None
    outputs: list[str] = field(default_factory=list)  # empty = all
    binary: dict[str, bool] = field(default_factory=dict)  # output name -> as binary
    binary_default: bool = False


def _json(raw: bytes | memoryview) -> dict[str, Any]:
    """The request as Python objects, except each input's `data` array: that stays simdjson's
    view of it, which `_numbers` copies into numpy in one pass (no Python object per number)."""
    try:
        document = simdjson.Parser().parse(raw)
        fields = list(document) if isinstance(document, simdjson.Object) else None
        request = {key: _plain(document[key]) for key in fields or () if key != "inputs"}
        if fields and "inputs" in fields:
            inputs = document["inputs"]
            request["inputs"] = (
                [_tensor(t) for t in inputs] if isinstance(inputs, simdjson.Array) else inputs
            )
    except (ValueError, RuntimeError) as exc:  # ValueError covers bad UTF-8; depth: RuntimeError
        raise OipError(f"request body is not valid JSON: {brief(str(exc))}") from None
    if fields is None:
        raise OipError("request body must be a JSON object with an 'inputs' list")
    return request


def _plain(value: Any) -> Any:
    """A simdjson value as Python's own (dict, list, or the scalar it already is)."""
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def _tensor(value: Any) -> Any:
    """One entry of `inputs`: an object's fields as Python's, its `data` array kept as is."""
    if not isinstance(value, simdjson.Object):
        return _plain(value)
    return {key: value[key] if key == "data" else _plain(value[key]) for key in value}


def _params(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """An OIP `parameters` object: absent means empty; anything but an object is an error."""
    value = obj.get("parameters")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OipError(f"{where}: 'parameters' must be an object, got {brief(value)}")
    return value


def _flag(params: dict[str, Any], key: str, default: bool, where: str) -> bool:
    """A boolean OIP parameter: JSON true or false only ("false" would read as true)."""
    value = params.get(key, default)
    if type(value) is not bool:
        raise OipError(f"{where}: '{key}' must be true or false, got {brief(value)}")
    return value


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0  # bool is an int subclass: refuse true/false


def _images_from(
    tensor: dict[str, Any], binary: bytes | memoryview | None, max_values: int
) -> np.ndarray:
    datatype = tensor.get("datatype")
    if datatype not in ACCEPTED_INPUT_TYPES:
        raise OipError(
            f"{WHERE} has datatype {brief(datatype)}; send UINT8 pixels (FP32 0..255 also works)"
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise OipError(f"{WHERE} needs a shape list of non-negative integers, got {brief(shape)}")
    if len(shape) != 4 or 0 in shape:
        # Checked before any array is made: numpy refuses over 64 dimensions, and a zero beside
        # huge dimensions passes a size check but not a reshape.
        raise OipError(f"{WHERE} must have shape [N, H, W, C] with every dimension at least 1")
    count = math.prod(shape)  # Python ints: no overflow, unlike np.prod
    if count > max_values:
        raise OipError(f"{WHERE} of shape {shape} holds more values than the size limit")
    dtype = DATATYPES[datatype]
    if binary is not None:
        if len(binary) != count * dtype.itemsize:
            raise OipError(
                f"{WHERE}: {len(binary)} binary bytes for shape {shape} of {datatype} "
                f"(expected {count * dtype.itemsize})"
            )
        array = np.frombuffer(binary, dtype=dtype)
    else:
        if "data" not in tensor:
            raise OipError(f"{WHERE} has no 'data' (and no binary_data_size)")
        array = _numbers(tensor["data"])
        if array.size != count:
            raise OipError(f"{WHERE}: {array.size} values for shape {shape} ({count})")
        if datatype == "UINT8" and array.dtype.kind == "f" and (array != np.rint(array)).any():
            raise OipError(f"{WHERE}: UINT8 data must be whole numbers (send FP32 for fractions)")
    if array.size and (not np.isfinite(array).all() if array.dtype.kind == "f" else False):
        raise OipError(f"{WHERE} holds NaN or infinite values")
    if array.dtype != np.uint8 and array.size and (array.min() < 0 or array.max() > 255):
        raise OipError(
            f"{WHERE}: pixel values must lie in 0..255, got {array.min()}..{array.max()}"
        )
    if array.dtype.kind == "f":  # whole numbers from JSON (checked above) or FP32 pixels
        array = np.rint(array)
    return array.astype(np.uint8, copy=False).reshape(shape)


def _numbers(data: Any) -> np.ndarray:
    """JSON `data` as a flat numeric array (nested arrays flattened); strings, booleans and
    nulls refused (numpy would turn "1" into 1.0 if asked for floats, so types are checked)."""
    if isinstance(data, simdjson.Array):
        for kind, dtype in (("i", np.int64), ("d", np.float64)):  # whole numbers first
            try:
                return np.frombuffer(data.as_buffer(of_type=kind), dtype=dtype)
            except (TypeError, ValueError, RuntimeError):
                continue
        raise OipError(f"{WHERE}: 'data' must hold numbers only")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise OipError(f"{WHERE}: 'data' is not a regular array of numbers") from None
    if array.size and array.dtype.kind not in "iuf":
        raise OipError(f"{WHERE}: 'data' must hold numbers only")
    return array.reshape(-1)


def brief(value: Any, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters: error messages never echo a huge input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def json_header_length(value: str) -> int:
    """The Inference-Header-Content-Length header's value: ASCII digits only (int() would also
    take " 12", "+12", "1_2" and other scripts' digits), else a 400."""
    if not (value.isascii() and value.isdigit()):
        raise OipError(f"Inference-Header-Content-Length {brief(value, 40)} is not a number")
    return int(value)


def parse_infer(
    body: bytes, header_length: str | None, known_outputs: tuple[str, ...] = ()
) -> InferRequest:
    """Parse an OIP v2 infer request (JSON or binary extension) into uint8 images.

    `known_outputs`, when given, lets unknown requested outputs fail before any inference.
    """
    if header_length is not None:
        split = json_header_length(header_length)
        if not 0 < split <= len(body):
            raise OipError(f"Inference-Header-Content-Length {split} exceeds the body")
        view = memoryview(body)  # slices share the body: the tensors are never copied out
        request, blob = _json(view[:split]), view[split:]
    else:
        request, blob = _json(body), b""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise OipError("request needs a non-empty 'inputs' list")
    offset, images = 0, None
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise OipError("each entry of 'inputs' must be an object")
        name = tensor.get("name")
        size = _params(tensor, "input").get("binary_data_size")
        chunk = None
        if size is not None:
            if not _is_count(size) or offset + size > len(blob):
                raise OipError(f"input {brief(name)}: binary_data_size {brief(size)} is wrong")
            chunk, offset = blob[offset : offset + size], offset + size
        if name != INPUT_NAME:
            raise OipError(f"unknown input {brief(name)}; this model takes {INPUT_NAME!r}")
        if images is not None:
            raise OipError(f"input {INPUT_NAME!r} is given more than once; send it once")
        images = _images_from(tensor, chunk, max_values=max(len(body), 1))
    if offset != len(blob):
        raise OipError(f"{len(blob) - offset} binary bytes after the last input")
    binary_default = _flag(_params(request, "request"), "binary_data_output", False, "request")
    wanted = request.get("outputs")
    wanted = [] if wanted is None else wanted
    if not isinstance(wanted, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted
    ):
        raise OipError("'outputs' must be a list of objects, each with a string 'name'")
    names = [o["name"] for o in wanted]
    unknown = [n for n in names if known_outputs and n not in known_outputs]
    if unknown:
        raise OipError(f"unknown output(s) {brief(unknown)}; this model gives {known_outputs}")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise OipError(f"'id' must be a string, got {brief(request_id)}")
    return InferRequest(
        images=images,
        id=request_id,
        outputs=names,
        binary={
            o["name"]: _flag(_params(o, "output"), "binary_data", binary_default, "output")
            for o in wanted
        },
        binary_default=binary_default,
    )


def infer_response(
    model: str, version: str, request: InferRequest, outputs: dict[str, np.ndarray]
) -> tuple[bytes, dict[str, str]]:
    """Body and extra headers of the answer; binary outputs follow the JSON header."""
    names = request.outputs or list(outputs)
    unknown = [n for n in names if n not in outputs]
    if unknown:
        raise OipError(f"unknown output(s) {brief(unknown)}; this model gives {list(outputs)}")
    described, blobs = [], []
    for name in names:
        array = outputs[name]
        datatype = next(k for k, v in DATATYPES.items() if v == array.dtype.newbyteorder("<"))
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if request.binary.get(name, request.binary_default):
            raw = np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = array.reshape(-1)
        described.append(entry)
    answer: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": described}
    if request.id is not None:
        answer["id"] = request.id
    header = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, {"content-type": "application/json"}
    extra = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return header + b"".join(blobs), extra
