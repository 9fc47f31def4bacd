"""int8 variant of an exported detector: onnxruntime static quantization, calibrated on ID val.

Only the network's Conv/Gemm/MatMul are quantized (QDQ, per-channel int8 weights, uint8
activations); the preprocessing, the energy head and a feature score's MatMul (its bank,
whitening or residual basis) stay float. The OOD threshold is re-calibrated on the int8
model's own ID-validation energies, and the accuracy/AUROC change against the fp32 file is
measured on the benchmark and written beside the model.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oaml.contract import (
    INPUT_NAME,
    Calibration,
    Meta,
    calibration_props,
    confidence_threshold,
    lineage_data_root,
)
from oaml.imaging import to_nhwc
from oaml.io import atomic_path, atomic_write_json
from oaml.serving.detector import Detector

CALIBRATION_IMAGES = 512


@dataclass
class QuantizeReport:
    path: Path
    report_path: Path
    deltas: dict[str, float]

    def summary(self) -> str:
        return ", ".join(f"{k} {v:+.4f}" for k, v in self.deltas.items())


def _val_images(detector: Detector, benchmark: str, root: Path) -> np.ndarray:
    """uint8 NHWC ID-validation images of the benchmark the model was trained on."""
    from oaml.data.benchmarks import get_benchmark
    from oaml.data.datasets import image_set_dataset
    from oaml.evaluation.evaluate import _onnx_predictor

    spec = _onnx_predictor(detector.path)[0]
    dataset = image_set_dataset(get_benchmark(benchmark, root).val, root, spec)
    return to_nhwc(np.stack([dataset[i][0].numpy() for i in range(len(dataset))]))


def _recalibrate(path: Path, val: np.ndarray, temperature: float) -> dict[str, str]:
    """The metadata of thresholds calibrated on the model's own ID-validation outputs (int8
    shifts them): the energy's, and the served score's where it is another."""
    detector = Detector(path)
    outputs = [detector.run(val[i : i + 256]) for i in range(0, len(val), 256)]
    energy = np.concatenate([o[1] for o in outputs])
    props = calibration_props(Calibration.fit(energy, temperature=temperature, split="val"))
    if detector.info.score != "ebo":
        confidence = np.concatenate([o[2] for o in outputs])
        props[Meta.SCORE_THRESHOLD] = repr(confidence_threshold(confidence))
    return props


def _feature_score_nodes(model: Any) -> list[str]:
    """Names of the nodes the exporter traced inside DetectorGraph.feature_score, kept float:
    quantizing vim's residual MatMul lost near AUROC, gained no speed (docs/serving.md)."""
    from oaml.export.graph import FEATURE_SCORE_MODULE  # imports torch: only when quantizing

    scope = repr(FEATURE_SCORE_MODULE)
    return [
        node.name
        for node in model.graph.node
        for prop in node.metadata_props
        if prop.key == "pkg.torch.onnx.name_scopes" and scope in prop.value
    ]


def _measure_deltas(
    fp32: Detector, fp32_path: Path, int8_path: Path, benchmark: str, root: Path
) -> tuple[dict[str, Any], dict[str, float]]:
    """Both files evaluated on their benchmark with the served score; int8 minus fp32."""
    from oaml.evaluation.evaluate import evaluate

    metrics = {
        name: evaluate(
            None,
            benchmark,
            root,
            score=fp32.info.score,
            temperature=fp32.info.temperature,  # the served score, not the default T
            onnx=path,
        ).metrics
        for name, path in (("fp32", fp32_path), ("int8", int8_path))
    }
    deltas = {"id_accuracy": metrics["int8"]["id"]["accuracy"] - metrics["fp32"]["id"]["accuracy"]}
    for group in ("near", "far"):
        if metrics["fp32"].get(group):
            for key in ("auroc", "fpr95"):
                deltas[f"{group}_{key}"] = metrics["int8"][group][key] - metrics["fp32"][group][key]
    return metrics, deltas


def quantize_int8(
    fp32_path: str | Path, out: str | Path | None = None, data_root: str | Path | None = None
) -> QuantizeReport:
    """Write the int8 variant (default: `<stem>.int8.onnx`) and its report; return the deltas."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path = Path(fp32_path)
    out = Path(out) if out else fp32_path.with_suffix(".int8.onnx")
    fp32 = Detector(fp32_path)
    lineage = json.loads(fp32.info.metadata.get(Meta.LINEAGE, "{}"))
    root = lineage_data_root(lineage, data_root)
    if root is None:
        raise ValueError("int8 calibration needs the ID data: pass --data-root")
    val = _val_images(fp32, lineage["benchmark"], root)
    # A seeded random sample: imglists may be sorted by class.
    pick = np.random.default_rng(0).permutation(len(val))[:CALIBRATION_IMAGES]
    calibration = np.ascontiguousarray(val[np.sort(pick)])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                [{INPUT_NAME: calibration[i : i + 64]} for i in range(0, len(calibration), 64)]
            )

        def get_next(self) -> dict[str, Any] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        raw, prepared = Path(tmp) / "int8.onnx", Path(tmp) / "prepared.onnx"
        # The exporter's scopes are read before pre-processing drops them; node names survive.
        float_nodes = _feature_score_nodes(onnx.load(str(fp32_path)))
        # Shape inference and graph cleanup first, as onnxruntime recommends before quantizing.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(raw),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "Gemm", "MatMul"],
            nodes_to_exclude=float_nodes,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        proto = onnx.load(str(raw))
        recalibrated = _recalibrate(raw, val, fp32.info.temperature)
    meta = {**fp32.info.metadata, Meta.VARIANT: "int8", **recalibrated}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta)
    with atomic_path(out) as tmp_path:
        onnx.save(proto, str(tmp_path))

    metrics, deltas = _measure_deltas(fp32, fp32_path, out, lineage["benchmark"], root)
    report_path = out.with_suffix(".report.json")
    atomic_write_json(
        report_path,
        {"fp32": str(fp32_path), "int8": str(out), "deltas": deltas, "metrics": metrics},
    )
    return QuantizeReport(out, report_path, deltas)
