"""`oaml evaluate`: ID accuracy and OOD detection of a checkpoint on a benchmark.

The result dict is the JSON that ACCEPTANCE.md specifies: per-set metrics with their group
(near, far or extra) and plain means over the near and the far sets. The model runs once per set;
any number of post-hoc scores (oaml.evaluation.postprocessors) are computed from its outputs, the
feature scores fitted first on the ID training images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from oaml.data.benchmarks import BenchmarkSpec, get_benchmark
from oaml.data.datasets import external_dataset, image_set_dataset
from oaml.device import pick_device
from oaml.evaluation.metrics import accuracy, ood_metrics
from oaml.evaluation.postprocessors import (
    Head,
    Outputs,
    Postprocessor,
    ScoreSettings,
    create_postprocessor,
)
from oaml.imaging import to_nhwc
from oaml.io import atomic_write
from oaml.models.checkpoint import load_checkpoint
from oaml.models.factory import ModelSpec
from oaml.models.predict import predict, predict_with_features
from oaml.progress import progress

GROUPS = ("near", "far")
Predict = Callable[[DataLoader, str, bool], Outputs]
SUMMARY_KEYS = ("auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_openood")


@dataclass
class Evaluation:
    """Metrics (the JSON) plus the raw confidences, for plots and --save-scores."""

    metrics: dict[str, Any]
    confidences: dict[str, np.ndarray] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    # Per set: the predicted class of each sample, and where its images are (image root and
    # paths, imglist order), so a report can show the worst cases.
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, tuple[Path, list[str]]] = field(default_factory=dict)
    # The benchmark evaluated on (its classes and image mode label the report).
    bench: BenchmarkSpec | None = None


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

    def run(loader: DataLoader, desc: str, features: bool) -> Outputs:
        logits, labels, served = [], [], []
        for images, targets in progress(loader, desc=desc, unit="batch"):
            out = detector.run(to_nhwc(images.numpy()))
            logits.append(out[0])
            served.append(out[2])
            labels.append(np.asarray(targets))
        return Outputs(np.concatenate(logits), np.concatenate(labels), None, np.concatenate(served))

    return spec, run, None, info.score


def _checkpoint_predictor(path: Path, device: str):
    model, spec, _ = load_checkpoint(path)
    torch_device = pick_device(device)
    model.to(torch_device)

    def run(loader: DataLoader, desc: str, features: bool) -> Outputs:
        if features:
            return Outputs(*predict_with_features(model, loader, torch_device, desc=desc))
        return Outputs(*predict(model, loader, torch_device, desc=desc))

    return spec, run, Head.of(model), None


@dataclass(frozen=True)
class EvalRequest:
    """What `evaluate_scores` measures: the model file, the data, which scores and how."""

    checkpoint: str | Path | None
    benchmark: str
    data_root: str | Path
    scores: tuple[str, ...] = ("ebo",)
    settings: ScoreSettings = field(default_factory=ScoreSettings)
    extra_ood: dict[str, Path] | None = None
    batch_size: int = 256
    num_workers: int = 0
    device: str = "auto"
    onnx: str | Path | None = None
    # ID training images the feature scores are fitted on (a class-stratified subset); None: all.
    fit_images: int | None = None


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
    knn_k: int = 50,
    vim_dim: int | None = None,
    fit_images: int | None = None,
) -> Evaluation:
    """Score ID test and every OOD set of `benchmark` (plus extra sets) with `checkpoint`, or
    with an exported ONNX detector (`onnx`, run by onnxruntime as the server runs it)."""
    request = EvalRequest(
        checkpoint, benchmark, data_root, (score,), ScoreSettings(temperature, knn_k, vim_dim),
        extra_ood, batch_size, num_workers, device, onnx, fit_images,
    )  # fmt: skip
    return evaluate_scores(request)[score]


class ServedScore(Postprocessor):
    """An exported detector's own confidence (its `score` output) for the score it serves:
    what is served is what is measured."""

    def __call__(self, out: Outputs) -> np.ndarray:
        return np.asarray(out.served, dtype=np.float64)


def _fitted(request: EvalRequest, bench, root: Path, spec, run, head, served: str | None):
    """Each requested score, fitted on the ID training outputs where it needs them; the score
    an ONNX detector computes itself (other than the energy) is read from its output."""
    posts = {name: create_postprocessor(name, request.settings) for name in request.scores}
    if served and served != "ebo" and served in posts:
        posts[served] = ServedScore(request.settings)
    needs = sorted(n for n, p in posts.items() if p.needs_features)
    if needs and request.onnx:
        raise ValueError(
            f"score(s) {', '.join(needs)} read penultimate features, which the ONNX detector "
            "does not output: evaluate the --checkpoint instead"
        )
    if needs:
        if "vim" in needs and head is None:
            raise ValueError("score vim needs a linear classifier head with a bias")
        train = image_set_dataset(
            bench.train, root, spec, subset=request.fit_images, seed=0, decoded=True
        )
        loader = DataLoader(train, batch_size=request.batch_size, num_workers=request.num_workers)
        fit_outputs = run(loader, "fit (ID train)", True)
        for name in needs:
            posts[name].fit(fit_outputs, head)
    return posts, bool(needs)


def evaluate_scores(request: EvalRequest) -> dict[str, Evaluation]:
    """One Evaluation per requested score, from one pass of the model over every set."""
    checkpoint, onnx = request.checkpoint, request.onnx
    if (checkpoint is None) == (onnx is None):
        raise ValueError("give exactly one of --checkpoint and --onnx")
    model_file = Path(checkpoint or onnx)
    if onnx:
        spec, run, head, served = _onnx_predictor(model_file)
    else:
        spec, run, head, served = _checkpoint_predictor(model_file, request.device)
    benchmark, extra_ood = request.benchmark, request.extra_ood
    root = Path(request.data_root).expanduser().resolve()
    bench = get_benchmark(benchmark, root)
    bench.require(root, bench.test_sets())
    if spec.num_classes != bench.num_classes:
        raise ValueError(
            f"{model_file} has {spec.num_classes} classes but benchmark "
            f"{benchmark!r} has {bench.num_classes}; evaluate it on the benchmark it was trained on"
        )

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

    posts, features = _fitted(request, bench, root, spec, run, head, served)
    outputs = {}
    for name, _, dataset in [("id", "id", id_set), *sets]:
        loader = DataLoader(dataset, batch_size=request.batch_size, num_workers=request.num_workers)
        outputs[name] = run(loader, name, features)
    groups = {name: group for name, group, _ in sets}
    model_key = "onnx" if onnx else "checkpoint"
    found = {
        score: _scored(score, post, outputs, groups, bench.name, (model_key, model_file), request)
        for score, post in posts.items()
    }
    images = {name: _image_refs(dataset) for name, _, dataset in [("id", "id", id_set), *sets]}
    predictions = {name: out.logits.argmax(1) for name, out in outputs.items()}
    for evaluation in found.values():
        evaluation.bench = bench
        evaluation.images.update(images)
        evaluation.predictions.update(predictions)
    return found


def _image_refs(dataset) -> tuple[Path, list[str]]:
    """(image root, relative paths) of a set's images, decoded-cache or not."""
    listed = getattr(dataset, "source", dataset)  # a decoded cache wraps the imglist dataset
    return Path(listed.image_root), [e.path for e in listed.entries]


def _scored(score, post, outputs, groups, benchmark, model, request) -> Evaluation:
    """The metrics JSON of one score over the sets' outputs."""
    ident = outputs["id"]
    id_conf = post(ident)
    metrics = {
        "benchmark": benchmark,
        "score": score,
        "temperature": request.settings.temperature,
        model[0]: str(model[1].resolve()),
        "id": {"accuracy": accuracy(ident.logits.argmax(1), ident.labels), "n": len(ident.labels)},
        "ood": {},
    }
    if post.needs_features:
        metrics["score_settings"] = {
            "knn_k": request.settings.knn_k, "vim_dim": request.settings.vim_dim,
            "fit_images": request.fit_images,
        }  # fmt: skip
    result = Evaluation(metrics=metrics, confidences={"id": id_conf})
    for name, group in groups.items():
        conf = post(outputs[name])
        metrics["ood"][name] = {**ood_metrics(id_conf, conf), "n": len(conf), "group": group}
        result.confidences[name] = conf
        result.groups[name] = group
    for group in GROUPS:
        members = [m for m in metrics["ood"].values() if m["group"] == group]
        metrics[group] = (
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
