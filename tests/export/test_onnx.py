"""The exported detector: one graph, self-describing, equal to PyTorch on real and random data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from oaml.contract import Calibration
from oaml.export.onnx import PARITY_TOLERANCE, export_onnx
from oaml.models.checkpoint import load_checkpoint, read_checkpoint
from oaml.serving.detector import Detector
from tests.conftest import oaml_in_process, run_oaml

pytestmark = pytest.mark.slow


def test_graph_interface_and_metadata(tiny_onnx, tiny_checkpoint):
    proto = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,) = proto.graph.input
    assert inp.name == "images"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[3].dim_value == 1  # dynamic batch, NHWC, 1 channel
    assert [o.name for o in proto.graph.output] == ["logits", "energy"]

    meta = {p.key: p.value for p in proto.metadata_props}
    payload = read_checkpoint(tiny_checkpoint)
    assert json.loads(meta["class_names"]) == payload["spec"]["class_names"]
    assert int(meta["input_size"]) == 28 and int(meta["channels"]) == 1
    assert float(meta["temperature"]) == 1.0
    # The graph outputs energy, and the checkpoint's threshold is in energy units: no sign flip.
    calibration = Calibration.from_dict(payload["calibration"])
    assert float(meta["ood_threshold"]) == calibration.energy_threshold
    assert json.loads(meta["calibration"]) == calibration.to_dict()
    lineage = json.loads(meta["lineage"])
    assert lineage["benchmark"] == "fmnist" and len(lineage["checkpoint_sha256"]) == 64


def test_parity_with_pytorch_on_real_and_random_batches(tiny_checkpoint, tmp_path, data_root):
    result = export_onnx(tiny_checkpoint, tmp_path / "m.onnx", data_root=data_root)
    assert {"real_logits", "real_energy", "random_logits", "random_energy"} <= set(result.parity)
    assert max(result.parity.values()) <= PARITY_TOLERANCE

    # Independently: odd batch sizes through the dynamic batch axis.
    model, spec, _ = load_checkpoint(tiny_checkpoint)
    detector = Detector(result.path)
    rng = np.random.default_rng(3)
    for n in (1, 7):
        images = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
        logits, energy, _ = detector.run(images)
        with torch.no_grad():
            expected = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()).numpy()
        assert logits.shape == (n, spec.num_classes) and energy.shape == (n,)
        np.testing.assert_allclose(logits, expected, atol=PARITY_TOLERANCE)
        np.testing.assert_allclose(
            energy, -np.log(np.exp(expected.astype(np.float64)).sum(1)), atol=PARITY_TOLERANCE
        )


def test_other_image_sizes_are_resized_inside_the_graph(tiny_onnx):
    detector = Detector(tiny_onnx)
    rng = np.random.default_rng(4)
    native = rng.integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    # Each pixel repeated 2x2: bilinear downsampling by 2 gives the native image back.
    doubled = native.repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_allclose(detector.run(doubled)[0], detector.run(native)[0], atol=1e-4)


def test_evaluate_onnx_matches_checkpoint(tiny_checkpoint, tiny_onnx, data_root, tmp_path):
    for flag, path in (("--checkpoint", tiny_checkpoint), ("--onnx", tiny_onnx)):
        run_oaml(
            "evaluate", flag, str(path), "--data-root", str(data_root),
            "--json", str(tmp_path / f"{flag[2:]}.json"),
        )  # fmt: skip
    torch_metrics = json.loads((tmp_path / "checkpoint.json").read_text())
    onnx_metrics = json.loads((tmp_path / "onnx.json").read_text())
    assert onnx_metrics["id"]["accuracy"] == pytest.approx(
        torch_metrics["id"]["accuracy"], abs=2e-4
    )
    for name, values in torch_metrics["ood"].items():
        assert onnx_metrics["ood"][name]["auroc"] == pytest.approx(values["auroc"], abs=1e-3)


def test_int8_variant_reports_its_deltas(tiny_onnx, data_root, tmp_path):
    from oaml.export.quantize import quantize_int8

    report = quantize_int8(tiny_onnx, tmp_path / "m.int8.onnx", data_root=data_root)
    saved = json.loads(report.report_path.read_text())
    assert set(saved["deltas"]) >= {"id_accuracy", "near_auroc", "far_auroc", "far_fpr95"}
    assert abs(saved["deltas"]["id_accuracy"]) < 0.05  # int8 stays close to fp32
    int8 = Detector(report.path)
    assert int8.info.metadata["variant"] == "int8"
    assert int8.info.threshold is not None
    assert int8.info.calibration.energy_threshold == int8.info.threshold
    assert int8.info.calibration.temperature == int8.info.temperature
    quantized_ops = {n.op_type for n in onnx.load(str(report.path)).graph.node}
    assert "QuantizeLinear" in quantized_ops and "DequantizeLinear" in quantized_ops


def test_export_of_a_non_checkpoint_is_a_one_line_error(tmp_path):
    bogus = tmp_path / "x.pt"
    bogus.write_bytes(b"not a checkpoint")
    proc = oaml_in_process("export", "--checkpoint", str(bogus), "--out", str(tmp_path / "m.onnx"))
    assert proc.returncode == 2
    assert "x.pt" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_a_head_score_is_a_third_output_calibrated_on_id_validation(
    msp_onnx, tiny_checkpoint, data_root
):
    from oaml.export.onnx import val_images

    proto = onnx.load(str(msp_onnx))
    assert [o.name for o in proto.graph.output] == ["logits", "energy", "score"]
    detector = Detector(msp_onnx)
    assert detector.info.score == "msp"
    _, spec, payload = load_checkpoint(tiny_checkpoint)
    logits, energy, confidence = detector.run(val_images(spec, payload, data_root))
    expected = torch.softmax(torch.from_numpy(logits), dim=1).max(dim=1).values.numpy()
    np.testing.assert_allclose(confidence, expected, atol=1e-5)
    np.testing.assert_allclose(
        energy, -torch.logsumexp(torch.from_numpy(logits), 1).numpy(), atol=1e-5
    )
    # The threshold keeps 95% of the ID validation images (the same rule as the energy's).
    kept = (confidence >= detector.info.score_threshold).mean()
    assert 0.95 <= kept < 0.95 + 2 / len(confidence)
    assert (detector.flags(confidence) == (confidence < detector.info.score_threshold)).all()


def test_unknown_scores_are_refused_before_anything_is_written(tiny_checkpoint, tmp_path):
    proc = oaml_in_process(
        "export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "k.onnx"),
        "--score", "odin",
    )  # fmt: skip
    assert proc.returncode == 2 and "can serve the scores" in proc.stderr
    assert not (tmp_path / "k.onnx").exists()


def test_a_feature_score_without_its_fit_data_is_a_one_line_error(tiny_checkpoint, tmp_path):
    payload = read_checkpoint(tiny_checkpoint)
    payload["lineage"] = {k: v for k, v in payload["lineage"].items() if k != "data_root"}
    moved = tmp_path / "moved.pt"  # a checkpoint copied away from its data
    torch.save(payload, moved)
    proc = oaml_in_process(
        "export", "--checkpoint", str(moved), "--out", str(tmp_path / "v.onnx"), "--score", "vim"
    )
    assert proc.returncode == 2 and "pass --data-root" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "v.onnx").exists()


def _features_and_fit(checkpoint, data_root, fit_images: int):
    """The checkpoint's (logits, labels, features) on `fit_images` ID training images."""
    from torch.utils.data import DataLoader

    from oaml.data.benchmarks import get_benchmark
    from oaml.data.datasets import image_set_dataset
    from oaml.models.predict import predict_with_features

    model, spec, payload = load_checkpoint(checkpoint)
    train = image_set_dataset(
        get_benchmark("fmnist").train, data_root, spec, subset=fit_images, seed=0
    )
    return model, spec, payload, predict_with_features(model, DataLoader(train, 256), "cpu")


@pytest.fixture(scope="module")
def feature_onnx(tiny_checkpoint, data_root, tmp_path_factory):
    """`oaml export --score SCORE` of the tiny student (k = 10, fitted on 2,000 images), once
    per score for this module's tests."""
    made: dict[str, Path] = {}

    def exported(score: str) -> Path:
        if score not in made:
            out = tmp_path_factory.mktemp("feature_onnx") / f"{score}.onnx"
            run_oaml(
                "export", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--data-root",
                str(data_root), "--score", score, "--knn-k", "10", "--fit-images", "2000",
            )  # fmt: skip
            made[score] = out
        return made[score]

    return exported


@pytest.mark.parametrize("score", ["knn", "mds", "rmds", "vim"])
def test_feature_scores_in_the_graph_match_evaluation(
    score, tiny_checkpoint, data_root, feature_onnx
):
    """The fitted constants in the graph (knn: MatMul + TopK on a bank; mds/rmds: a whitening
    MatMul; vim: the residual projection) give what `oaml evaluate --score` computes in float64,
    and the threshold keeps 95% of the ID validation images."""
    from oaml.evaluation.postprocessors import Head, Outputs, ScoreSettings, create_postprocessor
    from oaml.export.onnx import val_images

    detector = Detector(feature_onnx(score))
    assert detector.info.score == score
    model, spec, payload, fit = _features_and_fit(tiny_checkpoint, data_root, 2000)
    reference = create_postprocessor(score, ScoreSettings(knn_k=10))
    reference.fit(Outputs(*fit), Head.of(model))
    images = val_images(spec, payload, data_root, 300)
    logits, _, confidence = detector.run(images)
    with torch.no_grad():
        _, feats = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), True)
    expected = reference(Outputs(logits, np.zeros(len(logits)), feats.numpy()))
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(confidence, expected, atol=1e-4 * scale)
    # A real ranking, not a constant: ID and random-noise images are told apart.
    noise = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    assert np.median(confidence) > np.median(detector.run(noise)[2])
    every = detector.run(val_images(spec, payload, data_root))[2]  # what it was calibrated on
    assert 0.95 <= (every >= detector.info.score_threshold).mean() < 0.95 + 2 / len(every)
    settings = json.loads(detector.info.metadata["ood_score_settings"])
    if score == "knn":
        assert settings == {"k": 10, "bank": 2000}
    if score == "vim":
        assert settings["principal_dim"] == feats.shape[1] // 2


def test_feature_score_detector_evaluates_like_its_checkpoint(
    tiny_checkpoint, tmp_path, data_root, feature_onnx
):
    """Evaluating the exported file reads its own score output and agrees with evaluating the
    checkpoint (faiss there, a MatMul bank here). One feature score is enough: every score's
    output matches its evaluation in test_feature_scores_in_the_graph_match_evaluation, and
    reading the file's score output is the same code for all."""
    score = "knn"
    out = feature_onnx(score)
    scored = tmp_path / "m.json"
    run_oaml(
        "evaluate", "--onnx", str(out), "--data-root", str(data_root), "--score", score,
        "--json", str(scored),
    )  # fmt: skip
    from_file = json.loads(scored.read_text())
    direct = tmp_path / "d.json"
    run_oaml(
        "evaluate", "--checkpoint", str(tiny_checkpoint), "--data-root", str(data_root),
        "--score", score, "--knn-k", "10", "--fit-images", "2000", "--json", str(direct),
    )  # fmt: skip
    from_checkpoint = json.loads(direct.read_text())
    for name, values in from_checkpoint["ood"].items():
        assert from_file["ood"][name]["auroc"] == pytest.approx(values["auroc"], abs=1e-3), name


def test_int8_keeps_a_feature_score_float(feature_onnx, data_root, tmp_path):
    """int8 quantizes the network but not the feature score's fitted MatMul (vim's residual
    basis): the score's MatMul reads float tensors, the network's layers QDQ ones."""
    from oaml.export.quantize import quantize_int8

    fp32 = feature_onnx("vim")
    report = quantize_int8(fp32, tmp_path / "m.int8.onnx", data_root=data_root)
    graph = onnx.load(str(report.path)).graph
    producer = {output: node.op_type for node in graph.node for output in node.output}
    inputs_of = {
        node.op_type: [producer.get(i, "initializer") for i in node.input] for node in graph.node
    }
    assert "DequantizeLinear" not in inputs_of["MatMul"]
    assert "DequantizeLinear" in inputs_of["Conv"]
    assert Detector(report.path).info.score == "vim"
