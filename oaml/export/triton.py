"""The detector as a Triton model repository: what KServe's Triton runtime serves.

`<repo>/<name>/config.pbtxt` + `<name>/1/model.onnx`: the same ONNX graph `oaml export` wrote
(uint8 NHWC pixels in, logits and energy out), dynamic batching over the batch axis, and the
graph's metadata (classes, input size, the calibrated OOD threshold) as config parameters so a
client of the Triton endpoint finds the threshold where it finds the model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import onnx

from oaml.contract import INPUT_NAME, SCORE_OUTPUT, Meta, read_metadata

CONFIG = "config.pbtxt"
VERSION = "1"
MODEL_FILE = "model.onnx"


def _quoted(text: str) -> str:
    return json.dumps(text)  # a protobuf text-format string: double quotes, JSON escapes


def _scalar_output(name: str) -> str:
    """A [N] graph output: one value per image, so [1] per item, reshaped to []."""
    shape = "dims: [ 1 ] reshape: { shape: [ ] }"
    return f"  {{ name: {_quoted(name)} data_type: TYPE_FP32 {shape} }}"


def triton_config(onnx_path: str | Path, name: str, max_batch_size: int = 64) -> str:
    """config.pbtxt of the detector at `onnx_path`, served as model `name`."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    info = read_metadata({p.key: p.value for p in model.metadata_props}, onnx_path)
    parameters = {
        "class_names": json.dumps(list(info.class_names)),
        "input_size": str(info.input_size),
        "temperature": repr(info.temperature),
        "arch": info.arch,
        "interpolation": info.interpolation,
    }
    if info.threshold is not None:
        parameters["ood_threshold"] = repr(info.threshold)
    parameters["ood_score"] = info.score
    if info.score_threshold is not None:
        parameters["ood_score_threshold"] = repr(info.score_threshold)
    if Meta.LINEAGE in info.metadata:
        parameters["lineage"] = info.metadata[Meta.LINEAGE]
    lines = [
        f"name: {_quoted(name)}",
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        f"  {{ name: {_quoted(INPUT_NAME)} data_type: TYPE_UINT8 "
        f"dims: [ -1, -1, {info.channels} ] }}",
        "]",
        "output [",
        f'  {{ name: "logits" data_type: TYPE_FP32 dims: [ {info.num_classes} ] }},',
        _scalar_output("energy")
        + (",\n" + _scalar_output(SCORE_OUTPUT) if info.score != "ebo" else ""),
        "]",
        "dynamic_batching { }",
        "instance_group [ { kind: KIND_AUTO count: 1 } ]",
    ]
    lines += [
        f"parameters {{ key: {_quoted(key)} value: {{ string_value: {_quoted(value)} }} }}"
        for key, value in parameters.items()
    ]
    return "\n".join(lines) + "\n"


def write_triton_repo(
    onnx_path: str | Path, repo: str | Path, name: str, max_batch_size: int = 64
) -> Path:
    """Write (or replace) model `name` in the Triton repository `repo`; returns its folder.
    The model folder appears whole or not at all: it is built beside and renamed into place."""
    repo = Path(repo)
    repo.mkdir(parents=True, exist_ok=True)
    config = triton_config(onnx_path, name, max_batch_size)
    target = repo / name
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=repo) as staging:
        built = Path(staging) / name
        (built / VERSION).mkdir(parents=True)
        shutil.copyfile(onnx_path, built / VERSION / MODEL_FILE)
        (built / CONFIG).write_text(config)
        if target.exists():
            old = Path(staging) / "replaced"
            target.rename(old)
        built.rename(target)
    return target
