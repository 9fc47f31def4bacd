"""`oaml train`: train the student or the teacher of a preset on its benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from oaml import __version__
from oaml.config import Preset, stage_of
from oaml.data.benchmarks import get_benchmark
from oaml.data.datasets import OutlierImages, image_set_dataset, model_spec_for
from oaml.data.prepare import manifest_sha256
from oaml.device import pick_device
from oaml.models.checkpoint import load_checkpoint
from oaml.models.factory import build_model
from oaml.training.engine import TrainResult, seed_everything, train
from oaml.training.methods import create_method


def resolve_data_root(preset: Preset, data_root: str | Path | None) -> Path:
    """The command's --data-root, else the preset's, else an error saying what to pass."""
    root = data_root or preset.data_root
    if root is None:
        raise ValueError(
            f"preset {preset.name!r} needs a data folder: pass --data-root DIR "
            f"(for {preset.benchmark}: the OpenOOD-layout folder, or one made by "
            "`oaml data prepare`)"
        )
    return Path(root).expanduser().resolve()


def _attach_teacher(method, cfg, spec, model, train_set, bench, root: Path, device, outliers):
    """Cached frozen-teacher outputs, k-NN outlier embeddings in the teacher's feature space,
    and per-sample rows into the cache, handed to a distilling method."""
    from oaml.data.datasets import WithIndex
    from oaml.models.checkpoint import read_checkpoint
    from oaml.synthesis.knn import KnnConfig, sample_outliers
    from oaml.training.teacher_cache import teacher_outputs

    if not cfg.teacher_checkpoint:
        raise ValueError(
            "this method distils from a teacher: set train.teacher_checkpoint to the "
            "checkpoint of `oaml train --method teacher`"
        )
    teacher_spec = read_checkpoint(cfg.teacher_checkpoint)["spec"]
    if teacher_spec["num_classes"] != spec.num_classes:
        raise ValueError(
            f"the teacher has {teacher_spec['num_classes']} classes, the student "
            f"{spec.num_classes}: train the teacher on the same benchmark"
        )
    cached = teacher_outputs(
        cfg.teacher_checkpoint,
        bench.train.imglist_path(root),
        bench.train.image_root(root),
        Path(cfg.teacher_checkpoint).parent / "cache",
        device=device,
        entries=train_set.entries,  # only the images this run trains on
    )
    rows = np.arange(len(train_set.entries))
    labels = np.array([e.label for e in train_set.entries])
    per_class = min(cfg.knn_features_per_class, int(np.bincount(labels).min()))
    grouped = np.stack(
        [cached.features[rows[labels == c][:per_class]] for c in range(spec.num_classes)]
    )
    knn_cfg = KnnConfig(k=min(300, per_class - 1), select=min(50, per_class), seed=cfg.seed)
    scale = np.linalg.norm(grouped, axis=-1).mean(axis=1)
    knn = sample_outliers(grouped, cfg.knn_outliers_per_class, knn_cfg, scale=scale)
    method.attach(
        cached.logits,
        cached.features,
        knn,
        student_dim=model.feature_dim,
        outlier_dim=(outliers.latent_dim if outliers is not None else None)
        or spec.in_chans * spec.input_size**2,
    )
    return WithIndex(train_set, rows)


def train_stage(
    preset: Preset,
    role: str,
    data_root: str | Path | None,
    out_dir: str | Path,
    resume: bool = False,
    device: str = "auto",
    method: str | None = None,
    callbacks: list | None = None,
) -> TrainResult:
    """Train the preset's `role` ('student' or 'teacher') and return the final checkpoint."""
    stage = stage_of(preset, role)
    cfg = stage.train
    method_name = method or cfg.method
    if cfg.epochs < 1:
        raise ValueError(f"{role}.train.epochs must be at least 1, got {cfg.epochs}")
    bench = get_benchmark(preset.benchmark)
    root = resolve_data_root(preset, data_root)
    bench.require(root)
    torch_device = pick_device(device)
    spec = model_spec_for(
        bench, stage.model.arch, stage.model.width, stage.model.kwargs, stage.model.input_size
    )
    seed_everything(cfg.seed)
    model = build_model(spec, pretrained_file=stage.model.pretrained_file)
    if cfg.init_checkpoint:
        start, start_spec, _ = load_checkpoint(cfg.init_checkpoint)
        if start_spec.arch != spec.arch or start_spec.num_classes != spec.num_classes:
            raise ValueError(
                f"init_checkpoint {cfg.init_checkpoint} holds {start_spec.arch} with "
                f"{start_spec.num_classes} classes; this stage needs {spec.arch} with "
                f"{spec.num_classes}"
            )
        model.load_state_dict(start.state_dict())
    train_set = image_set_dataset(
        bench.train, root, spec, cfg.augment, subset=cfg.train_subset, seed=cfg.seed
    )
    val_set = image_set_dataset(bench.val, root, spec)
    method_module = create_method(method_name, cfg.loss)
    outliers = None
    # Only methods that train on outliers load them (a preset may name them for all methods).
    if cfg.outliers and method_module.needs_outliers:
        from oaml.synthesis.outlier_sets import load_outliers

        found = load_outliers(cfg.outliers)
        outliers = OutlierImages(found.images, spec, found.latents)
    if getattr(method_module, "needs_teacher", False):
        train_set = _attach_teacher(
            method_module, cfg, spec, model, train_set, bench, root, torch_device, outliers
        )
    lineage = {
        "preset": preset.name,
        "benchmark": bench.name,
        "role": role,
        "method": method_name,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "train_images": len(train_set),
        "data_root": str(root),
        "data_manifest_sha256": manifest_sha256(bench.name, root),
        "init_checkpoint": cfg.init_checkpoint,
        "outliers": cfg.outliers,
        "teacher_checkpoint": cfg.teacher_checkpoint,
        "pretrained_file": stage.model.pretrained_file,
        "oaml_version": __version__,
        "torch_version": str(torch.__version__),
    }
    return train(
        model,
        spec,
        method_module,
        train_set,
        val_set,
        cfg,
        out_dir,
        torch_device,
        resume=resume,
        lineage=lineage,
        temperature=preset.evaluation.temperature,
        outliers=outliers,
        callbacks=callbacks,
    )
