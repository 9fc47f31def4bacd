"""`oaml evaluate`: ID accuracy and OOD detection of a checkpoint on a benchmark.

The result dict is the JSON that ACCEPTANCE.md specifies: per-set metrics with their group
(near, far or extra) and plain means over the near and the far sets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from oaml.data.benchmarks import get_benchmark
from oaml.data.datasets import external_dataset, image_set_dataset
from oaml.device import pick_device
from oaml.evaluation.metrics import accuracy, ood_metrics
from oaml.imaging import to_nhwc
from oaml.io import atomic_write
from oaml.models.checkpoint import load_checkpoint
from oaml.models.factory import ModelSpec
from oaml.models.predict import predict
from oaml.progress import progress
from oaml.scores import score_fn

GROUPS = ("near", "far")
Predict = Callable[[DataLoader, str], tuple[np.ndarray, np.ndarray]]
SUMMARY_KEYS = ("auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_openood")


@dataclass
class Evaluation:
    """Metrics (the JSON) plus the raw confidences, for plots and --save-scores."""

    metrics: dict[str, Any]
    confidences: dict[str, np.ndarray] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)


def parse_extra_ood(items: list[str]) -> dict[str, Path]:
    """`NAME=IMGLIST` pairs into a mapping, with errors that say the expected form."""
    extra: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"--extra-ood {item!r} must look like NAME=IMGLIST")
        if name.strip() in extra:
            raise ValueError(f"--extra-ood name {name.strip()!r} is given twice")
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"--extra-ood name {name!r} may hold only letters, digits, - and _")
        extra[name.strip()] = Path(path.strip())
    return extra


def _onnx_predictor(path: Path) -> tuple[ModelSpec, Predict]:
    """The exported detector under onnxruntime, with the ModelSpec its metadata describes."""
    from oaml.serving.detector import Detector

    detector = Detector(path)
    info = detector.info
    spec = ModelSpec(
        arch=info.arch,
        num_classes=info.num_classes,
        in_chans=info.channels,
        input_size=info.input_size,
        mean=info.mean,
        std=info.std,
        class_names=info.class_names,
        interpolation=info.interpolation,
    )

    def run(loader: DataLoader, desc: str) -> tuple[np.ndarray, np.ndarray]:
        logits, labels = [], []
        for images, targets in progress(loader, desc=desc, unit="batch"):
            logits.append(detector.run(to_nhwc(images.numpy()))[0])
            labels.append(np.asarray(targets))
        return np.concatenate(logits), np.concatenate(labels)

    return spec, run


def _checkpoint_predictor(path: Path, device: str) -> tuple[ModelSpec, Predict]:
    model, spec, _ = load_checkpoint(path)
    torch_device = pick_device(device)
    model.to(torch_device)
    return spec, lambda loader, desc: predict(model, loader, torch_device, desc=desc)


def evaluate(
    checkpoint: str | Path | None,
    benchmark: str,
    data_root: str | Path,
    score: str = "ebo",
    temperature: float = 1.0,
    extra_ood: dict[str, Path] | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str = "auto",
    onnx: str | Path | None = None,
) -> Evaluation:
    """Score ID test and every OOD set of `benchmark` (plus extra sets) with `checkpoint`, or
    with an exported ONNX detector (`onnx`, run by onnxruntime as the server runs it)."""
    if (checkpoint is None) == (onnx is None):
        raise ValueError("give exactly one of --checkpoint and --onnx")
    model_file = Path(checkpoint or onnx)
    spec, run = _onnx_predictor(model_file) if onnx else _checkpoint_predictor(model_file, device)
    bench = get_benchmark(benchmark)
    root = Path(data_root).expanduser().resolve()
    bench.require(root, bench.test_sets())
    if spec.num_classes != bench.num_classes:
        raise ValueError(
            f"{model_file} has {spec.num_classes} classes but benchmark "
            f"{benchmark!r} has {bench.num_classes}; evaluate it on the benchmark it was trained on"
        )
    scorer = score_fn(score)

    def confidences(dataset, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
        logits, labels = run(loader, name)
        conf = scorer(torch.from_numpy(logits), temperature).numpy().astype(np.float64)
        return logits, labels, conf

    # Build every dataset first, so a bad --extra-ood fails before minutes of inference. The
    # benchmark's own sets are decoded once into the data folder's cache: every later
    # evaluation of any model of that input size (bench quality: each method and seed) maps it.
    id_set = image_set_dataset(bench.test, root, spec, decoded=True)
    sets = [(s.name, s.group, image_set_dataset(s, root, spec, decoded=True)) for s in bench.ood]
    for name, path in (extra_ood or {}).items():
        if name == "id" or any(name == s[0] for s in sets):
            raise ValueError(f"--extra-ood name {name!r} clashes with a set of {benchmark}")
        sets.append((name, "extra", external_dataset(path, spec)))
    for name, _, dataset in [("id", "id", id_set), *sets]:
        if len(dataset) == 0:
            raise ValueError(f"set {name!r} ({dataset.imglist}) lists no images")

    id_logits, id_labels, id_conf = confidences(id_set, "id")
    result = Evaluation(
        metrics={
            "benchmark": bench.name,
            "score": score,
            "temperature": temperature,
            ("onnx" if onnx else "checkpoint"): str(model_file.resolve()),
            "id": {"accuracy": accuracy(id_logits.argmax(1), id_labels), "n": len(id_labels)},
            "ood": {},
        },
        confidences={"id": id_conf},
    )
    for name, group, dataset in sets:
        _, _, conf = confidences(dataset, name)
        result.metrics["ood"][name] = {**ood_metrics(id_conf, conf), "n": len(conf), "group": group}
        result.confidences[name] = conf
        result.groups[name] = group
    for group in GROUPS:
        members = [m for m in result.metrics["ood"].values() if m["group"] == group]
        result.metrics[group] = (
            {key: float(np.mean([m[key] for m in members])) for key in SUMMARY_KEYS}
            if members
            else None
        )
    return result


def save_scores(evaluation: Evaluation, folder: str | Path) -> list[Path]:
    """Write `id.npy` and `<set>.npy` (per-sample confidence, imglist order) atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, conf in evaluation.confidences.items():
        path = folder / f"{name}.npy"
        atomic_write(path, lambda fh, c=conf: np.save(fh, c))
        written.append(path)
    return written
