"""The Triton model repository: config.pbtxt read by Triton's own model-config protobuf, the
same ONNX graph beside it, and shapes that agree with the graph's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format

from oaml.contract import read_metadata
from oaml.export.triton import write_triton_repo
from tests.conftest import run_oaml

pytestmark = pytest.mark.slow  # the tiny detector is trained first


def model_config_pb2():
    """tritonclient's generated ModelConfig module (Triton's model_config.proto), loaded from its
    file: the package's grpc __init__ needs grpcio, which the protobuf module itself does not."""
    import tritonclient

    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_config(path: Path):
    pb2 = model_config_pb2()
    return pb2, text_format.Parse(path.read_text(), pb2.ModelConfig())  # unknown fields fail


def test_export_writes_a_repository_triton_can_read(tmp_path, tiny_checkpoint):
    onnx_path, repo = tmp_path / "detector.onnx", tmp_path / "repo"
    run_oaml(
        "export", "--checkpoint", str(tiny_checkpoint), "--out", str(onnx_path),
        "--triton-repo", str(repo), "--triton-name", "fmnist",
    )  # fmt: skip
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()) == [
        "fmnist/1/model.onnx",
        "fmnist/config.pbtxt",
    ]
    assert (repo / "fmnist/1/model.onnx").read_bytes() == onnx_path.read_bytes()
    pb2, config = parse_config(repo / "fmnist" / "config.pbtxt")
    assert (config.name, config.platform, config.max_batch_size) == (
        "fmnist",
        "onnxruntime_onnx",
        64,
    )
    model = onnx.load(str(onnx_path))
    info = read_metadata({p.key: p.value for p in model.metadata_props}, onnx_path)
    graph_inputs = {i.name: i for i in model.graph.input}
    graph_outputs = {o.name: o for o in model.graph.output}
    (images,) = config.input
    assert images.name in graph_inputs and images.data_type == pb2.TYPE_UINT8
    assert list(images.dims) == [-1, -1, info.channels]
    # Triton's dims leave out the batch axis: one fewer than the graph's rank.
    assert len(images.dims) + 1 == len(graph_inputs[images.name].type.tensor_type.shape.dim)
    outputs = {o.name: o for o in config.output}
    assert set(outputs) == set(graph_outputs) == {"logits", "energy"}
    assert list(outputs["logits"].dims) == [info.num_classes]
    assert list(outputs["energy"].dims) == [1] and list(outputs["energy"].reshape.shape) == []
    assert all(o.data_type == pb2.TYPE_FP32 for o in outputs.values())
    assert config.HasField("dynamic_batching")
    assert config.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_AUTO
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    assert float(parameters["ood_threshold"]) == info.threshold
    assert parameters["input_size"] == str(info.input_size)


def test_writing_again_replaces_the_model_whole(tmp_path, tiny_onnx):
    repo = tmp_path / "repo"
    first = write_triton_repo(tiny_onnx, repo, "m", max_batch_size=8)
    (first / "stale.txt").write_text("from an older export")
    second = write_triton_repo(tiny_onnx, repo, "m", max_batch_size=16)
    assert second == first and not (second / "stale.txt").exists()
    assert parse_config(second / "config.pbtxt")[1].max_batch_size == 16
    assert [p.name for p in repo.iterdir()] == ["m"]  # no staging folder left behind


def test_a_served_score_is_a_triton_output_too(tmp_path, msp_onnx):
    _, config = parse_config(write_triton_repo(msp_onnx, tmp_path, "msp") / "config.pbtxt")
    model = onnx.load(str(msp_onnx))
    outputs = {o.name: o for o in config.output}
    assert set(outputs) == {o.name for o in model.graph.output} == {"logits", "energy", "score"}
    assert list(outputs["score"].dims) == [1] and list(outputs["score"].reshape.shape) == []
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    assert parameters["ood_score"] == "msp" and 0 < float(parameters["ood_score_threshold"]) < 1
