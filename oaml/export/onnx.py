"""`oaml export`: write the detector as one ONNX graph with self-describing metadata, and check it.

The graph (export.graph.DetectorGraph) takes raw uint8 NHWC pixels and returns logits and energy.
Metadata (ONNX metadata_props, all strings) carries what a server or scorer needs and nothing
else has to re-declare: class names, input size and channels, mean/std, the resize interpolation
(oaml.imaging.resize), temperature, the OOD threshold calibrated at 95% ID TPR on the ID
validation split, and the training lineage.
Parity with PyTorch (max abs difference of logits and energy) is checked before the file appears.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oaml import __version__
from oaml.contract import INPUT_NAME, OUTPUT_NAMES, Calibration, write_metadata
from oaml.export.graph import DetectorGraph
from oaml.imaging import to_nchw, to_nhwc
from oaml.io import atomic_path, sha256_file
from oaml.models.checkpoint import load_checkpoint
from oaml.models.factory import ModelSpec
from oaml.serving.detector import Detector

OPSET = 18
PARITY_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The exported graph disagrees with PyTorch or fails the ONNX checker."""


@dataclass
class ExportResult:
    path: Path
    parity: dict[str, float]
    metadata: dict[str, str]


def checkpoint_calibration(payload: dict[str, Any]) -> Calibration | None:
    """The checkpoint's calibration (either units, see Calibration.from_dict), if it has one."""
    calibration = payload.get("calibration")
    return Calibration.from_dict(calibration) if calibration else None


def detector_metadata(
    spec: ModelSpec, payload: dict[str, Any], checkpoint: Path, temperature: float
) -> dict[str, str]:
    """The metadata_props of the exported graph, written by the contract from the checkpoint."""
    return write_metadata(
        version=__version__,
        arch=spec.arch,
        class_names=list(spec.class_names) or [str(i) for i in range(spec.num_classes)],
        input_size=spec.input_size,
        channels=spec.in_chans,
        mean=spec.mean,
        std=spec.std,
        temperature=temperature,
        interpolation=spec.interpolation,
        lineage={**payload.get("lineage", {}), "checkpoint_sha256": sha256_file(checkpoint)},
        calibration=checkpoint_calibration(payload),
    )


def _torch_outputs(model, images_nhwc: np.ndarray, temperature: float):
    from oaml.scores import energy

    with torch.no_grad():
        x = torch.from_numpy(to_nchw(images_nhwc))
        logits = model(x)
        return logits.numpy(), energy(logits, temperature).numpy()


def parity_batches(spec: ModelSpec, payload: dict[str, Any], data_root: Path | None, n: int = 128):
    """A real batch (ID validation images, when the data is at hand) and a random one."""
    rng = np.random.default_rng(0)
    shape = (n, spec.input_size, spec.input_size, spec.in_chans)
    batches = {"random": rng.integers(0, 256, size=shape, dtype=np.uint8)}
    lineage = payload.get("lineage", {})
    root = data_root or (Path(lineage["data_root"]) if lineage.get("data_root") else None)
    if root is not None and lineage.get("benchmark"):
        from oaml.data.benchmarks import get_benchmark
        from oaml.data.datasets import image_set_dataset

        bench = get_benchmark(lineage["benchmark"])
        if bench.val.imglist_path(root).is_file():
            dataset = image_set_dataset(bench.val, root, spec)
            count = min(n, len(dataset))
            images = np.stack([dataset[i][0].numpy() for i in range(count)])
            batches["real"] = to_nhwc(images)
    return batches


def check_parity(model, detector: Detector, batches: dict[str, np.ndarray], temperature: float):
    """Max abs difference of logits and energy between PyTorch and onnxruntime, per batch."""
    result = {}
    for name, images in batches.items():
        torch_logits, torch_energy = _torch_outputs(model, images, temperature)
        onnx_logits, onnx_energy = detector.run(images)
        result[f"{name}_logits"] = float(np.abs(torch_logits - onnx_logits).max())
        result[f"{name}_energy"] = float(np.abs(torch_energy - onnx_energy).max())
    worst = max(result.values())
    if worst > PARITY_TOLERANCE:
        raise ExportError(
            f"ONNX output differs from PyTorch by {worst:.2e} (> {PARITY_TOLERANCE:g}): {result}"
        )
    return result


def export_onnx(
    checkpoint: str | Path, out: str | Path, data_root: str | Path | None = None
) -> ExportResult:
    """Export `checkpoint` to `out` (atomically), with metadata, checker and parity checks."""
    import onnx

    checkpoint, out = Path(checkpoint), Path(out)
    model, spec, payload = load_checkpoint(checkpoint)
    calibration = checkpoint_calibration(payload)
    temperature = calibration.temperature if calibration else 1.0
    graph = DetectorGraph(model, spec.input_size, temperature).eval()
    example = torch.zeros((2, spec.input_size, spec.input_size, spec.in_chans), dtype=torch.uint8)
    Dim = torch.export.Dim
    batch = Dim("batch")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        program = torch.onnx.export(
            graph,
            (example,),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            opset_version=OPSET,
            dynamo=True,
            # Positional, per forward() argument: batch, height and width of the images vary.
            dynamic_shapes=({0: batch, 1: Dim("height"), 2: Dim("width")},),
            external_data=False,
        )
        program.save(str(raw))
        proto = onnx.load(str(raw))
    meta = detector_metadata(spec, payload, checkpoint, temperature)
    onnx.helper.set_model_props(proto, meta)
    proto.producer_name, proto.producer_version = "oaml", __version__
    proto.doc_string = f"oaml OOD detector ({spec.arch}, {spec.num_classes} classes)"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph fails the ONNX checker: {exc}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp_path:
        onnx.save(proto, str(tmp_path))
        detector = Detector(tmp_path)
        batches = parity_batches(spec, payload, Path(data_root) if data_root else None)
        parity = check_parity(model, detector, batches, temperature)
    return ExportResult(out, parity, meta)
