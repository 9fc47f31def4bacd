"""`oaml export`: write the detector as one ONNX graph with self-describing metadata, and check it.

The graph (export.graph.DetectorGraph) takes raw uint8 NHWC pixels and returns logits and energy.
Metadata (ONNX metadata_props, all strings) carries what a server or scorer needs and nothing
else has to re-declare: class names, input size and channels, mean/std, the resize interpolation
(oaml.imaging.resize), temperature, the OOD threshold calibrated at 95% ID TPR on the ID
validation split, and the training lineage.
Parity with PyTorch (max abs difference of logits and energy) is checked before the file appears.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oaml import __version__
from oaml.contract import (
    INPUT_NAME,
    OUTPUT_NAMES,
    SCORE_OUTPUT,
    Calibration,
    Meta,
    confidence_threshold,
    lineage_data_root,
    servable,
    write_metadata,
)
from oaml.evaluation.postprocessors import ScoreSettings
from oaml.export.graph import DetectorGraph
from oaml.imaging import to_nhwc
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
    spec: ModelSpec,
    payload: dict[str, Any],
    checkpoint: Path,
    temperature: float,
    score: str = "ebo",
    score_threshold: float | None = None,
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
        score=score,
        score_threshold=score_threshold,
    )


def _torch_outputs(graph: DetectorGraph, images_nhwc: np.ndarray):
    """The graph in PyTorch: logits, energy and the served confidence (-energy for ebo)."""
    with torch.no_grad():
        outputs = [o.numpy() for o in graph(torch.from_numpy(images_nhwc))]
    return outputs if len(outputs) == 3 else [*outputs, -outputs[1]]


def val_images(spec: ModelSpec, payload: dict[str, Any], data_root: Path | None, n=None):
    """Up to `n` (None: all) ID validation images, NHWC uint8, where the data is at hand."""
    lineage = payload.get("lineage", {})
    root = lineage_data_root(lineage, data_root)
    if root is None:
        return None
    from oaml.data.benchmarks import get_benchmark
    from oaml.data.datasets import image_set_dataset

    bench = get_benchmark(lineage["benchmark"], root)
    if not bench.val.imglist_path(root).is_file():
        return None
    dataset = image_set_dataset(bench.val, root, spec, decoded=n is None)
    count = len(dataset) if n is None else min(n, len(dataset))
    return to_nhwc(np.stack([dataset[i][0].numpy() for i in range(count)]))


def parity_batches(spec: ModelSpec, payload: dict[str, Any], data_root: Path | None, n: int = 128):
    """A real batch (ID validation images, when the data is at hand) and a random one."""
    rng = np.random.default_rng(0)
    shape = (n, spec.input_size, spec.input_size, spec.in_chans)
    batches = {"random": rng.integers(0, 256, size=shape, dtype=np.uint8)}
    real = val_images(spec, payload, data_root, n)
    if real is not None:
        batches["real"] = real
    return batches


def check_parity(graph: DetectorGraph, detector: Detector, batches: dict[str, np.ndarray]):
    """Max abs difference of logits and energy between PyTorch and onnxruntime, per batch, and
    of the served confidence relative to its largest magnitude (at least 1): Mahalanobis
    distances reach thousands, where float32 leaves about 1e-4 absolute."""
    result = {}
    for name, images in batches.items():
        expected = _torch_outputs(graph, images)
        got = detector.run(images)
        for key, a, b in zip(("logits", "energy"), expected[:2], got[:2], strict=True):
            result[f"{name}_{key}"] = float(np.abs(a - b).max())
        scale = max(1.0, float(np.abs(expected[2]).max()))
        result[f"{name}_score_relative"] = float(np.abs(expected[2] - got[2]).max()) / scale
    worst = max(result.values())
    if worst > PARITY_TOLERANCE:
        raise ExportError(
            f"ONNX output differs from PyTorch by {worst:.2e} (> {PARITY_TOLERANCE:g}): {result}"
        )
    return result


def _score_threshold(path: Path, images: np.ndarray | None, score: str) -> float:
    """The served score's threshold, calibrated on the exported graph's own ID-validation
    confidences (95% of them kept)."""
    if images is None:
        raise ExportError(
            f"calibrating the {score} threshold needs the ID validation images: pass --data-root"
        )
    detector = Detector(path)
    confidence = np.concatenate(
        [detector.run(images[i : i + 256])[2] for i in range(0, len(images), 256)]
    )
    return confidence_threshold(confidence)


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    data_root: str | Path | None = None,
    score: str = "ebo",
    knn_k: int = 50,
    fit_images: int | None = None,
    vim_dim: int | None = None,
) -> ExportResult:
    """Export `checkpoint` to `out` (atomically), with metadata, checker and parity checks.
    `score`: what the detector decides on (a third output unless ebo). A feature score (knn,
    mds, rmds, vim) is fitted on `fit_images` ID training images (all when None) and carries
    its constants in the graph: knn its bank and the `knn_k`-th neighbour, vim `vim_dim`."""
    import onnx

    from oaml.export.feature_scores import FEATURE_SCORES, fit_feature_score

    servable(score)
    checkpoint, out = Path(checkpoint), Path(out)
    root = Path(data_root) if data_root else None
    model, spec, payload = load_checkpoint(checkpoint)
    calibration = checkpoint_calibration(payload)
    temperature = calibration.temperature if calibration else 1.0
    fitted = None
    if score in FEATURE_SCORES:  # a FeatureScoreError (no data, no linear head) says why not
        settings = ScoreSettings(temperature, knn_k, vim_dim)
        fitted = fit_feature_score(score, model, spec, payload, root, settings, fit_images)
    graph = DetectorGraph(model, spec.input_size, temperature, score, fitted).eval()
    outputs = [*OUTPUT_NAMES, SCORE_OUTPUT] if score != "ebo" else list(OUTPUT_NAMES)
    example = torch.zeros((2, spec.input_size, spec.input_size, spec.in_chans), dtype=torch.uint8)
    Dim = torch.export.Dim
    batch = Dim("batch")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        program = torch.onnx.export(
            graph,
            (example,),
            input_names=[INPUT_NAME],
            output_names=outputs,
            opset_version=OPSET,
            dynamo=True,
            # Positional, per forward() argument: batch, height and width of the images vary.
            dynamic_shapes=({0: batch, 1: Dim("height"), 2: Dim("width")},),
            external_data=False,
        )
        program.save(str(raw))
        proto = onnx.load(str(raw))
    meta = detector_metadata(spec, payload, checkpoint, temperature, score)
    if fitted is not None:
        meta[Meta.SCORE_SETTINGS] = json.dumps(fitted.settings())
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
        if score != "ebo":  # the threshold of the served score, from the graph itself
            threshold = _score_threshold(tmp_path, val_images(spec, payload, root), score)
            meta[Meta.SCORE_THRESHOLD] = repr(threshold)
            onnx.helper.set_model_props(proto, meta)
            onnx.save(proto, str(tmp_path))
        detector = Detector(tmp_path)
        batches = parity_batches(spec, payload, root)
        parity = check_parity(graph, detector, batches)
    return ExportResult(out, parity, meta)
