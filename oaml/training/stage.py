"""`oaml train`: train the student or the teacher of a preset on its benchmark."""

from __future__ import annotations

from pathlib import Path

import torch

from oaml import __version__
from oaml.config import Preset, stage_of
from oaml.data.benchmarks import get_benchmark
from oaml.data.datasets import OutlierImages, image_set_dataset, model_spec_for
from oaml.data.prepare import manifest_sha256
from oaml.device import pick_device
from oaml.models.checkpoint import load_checkpoint
from oaml.models.factory import ModelSpec, build_model
from oaml.models.net import OamlNet
from oaml.training.engine import TrainResult, seed_everything, train
from oaml.training.methods import PrepareContext, create_method


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


def _start_from(model: OamlNet, spec: ModelSpec, checkpoint: str) -> None:
    """Load `checkpoint`'s weights into `model`, refusing another architecture or classes."""
    start, start_spec, _ = load_checkpoint(checkpoint)
    if start_spec.arch != spec.arch or start_spec.num_classes != spec.num_classes:
        raise ValueError(
            f"init_checkpoint {checkpoint} holds {start_spec.arch} with "
            f"{start_spec.num_classes} classes; this stage needs {spec.arch} with "
            f"{spec.num_classes}"
        )
    model.load_state_dict(start.state_dict())


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
        _start_from(model, spec, cfg.init_checkpoint)
    # Both sets are read every epoch: decoded once into a memory-mapped cache (oaml.data.decoded).
    train_set = image_set_dataset(
        bench.train, root, spec, cfg.augment, subset=cfg.train_subset, seed=cfg.seed, decoded=True
    )
    val_set = image_set_dataset(bench.val, root, spec, decoded=True)
    method_module = create_method(method_name, cfg.loss)
    outliers = None
    # Only methods that train on outliers load them (a preset may name them for all methods).
    if cfg.outliers and method_module.needs_outliers:
        from oaml.synthesis.outlier_sets import load_outliers

        found = load_outliers(cfg.outliers)
        outliers = OutlierImages(found.images, spec, found.latents)
    # Each method sets itself up (a distilling one attaches its teacher's outputs) and may
    # wrap the train set; the stage never asks which method it runs.
    train_set = method_module.prepare(
        PrepareContext(cfg, spec, model, train_set, bench, root, torch_device, outliers)
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
