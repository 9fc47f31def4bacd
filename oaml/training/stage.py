"""Train the student or the teacher of a preset on its benchmark: `oaml train`, the pipeline's
training stages and `oaml bench quality` all go through `train_stage`.

A stage folder holds `last.pt` (written every epoch) and `checkpoint.pt` (the final model); a
finished stage with the same settings is kept and a killed one continues from its last epoch.
"""

from __future__ import annotations

from pathlib import Path

import torch

from oaml import __version__
from oaml.config import ModelConfig, Preset, stage_of
from oaml.data.benchmarks import get_benchmark
from oaml.data.datasets import OutlierImages, image_set_dataset, model_spec_for
from oaml.data.prepare import manifest_sha256
from oaml.distributed import Distributed
from oaml.models.checkpoint import load_checkpoint, read_checkpoint
from oaml.models.factory import ModelSpec, build_model
from oaml.models.hub import HubWeights, fetch_weights
from oaml.models.net import OamlNet
from oaml.training.engine import (
    FINAL_FILE,
    RESUME_FILE,
    TrainResult,
    changed_settings,
    seed_everything,
    train,
)
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
    resume: bool = True,
    device: str = "auto",
    method: str | None = None,
    callbacks: list | None = None,
) -> TrainResult:
    """Train the preset's `role` ('student' or 'teacher') into `out_dir`. With `resume`, a final
    checkpoint trained with these settings is kept (another one is refused) and a killed run
    continues from last.pt; without, training starts over. `callbacks` get each epoch's log.
    Under torchrun every rank calls this and trains its share (oaml.distributed)."""
    out = Path(out_dir)
    final = out / FINAL_FILE
    if resume and final.is_file():
        payload = read_checkpoint(final)
        differing = _differences(payload, preset, role, method)
        if differing:
            raise ValueError(
                f"{final} was trained with other settings ({', '.join(differing)}); "
                "use a new --out or delete that folder"
            )
        return TrainResult(final, int(payload["epoch"]), list(payload["history"]), reused=True)
    resume = resume and (out / RESUME_FILE).is_file()
    return _run(preset, role, data_root, out, resume, device, method, callbacks)


def _differences(payload: dict, preset: Preset, role: str, method: str | None) -> list[str]:
    """Settings under which a checkpoint (`payload`) was trained that differ from the preset's."""
    stage = stage_of(preset, role)
    differing = changed_settings(payload, stage.train)
    if payload.get("lineage", {}).get("method") != (method or stage.train.method):
        differing.append("method")
    spec = payload["spec"]
    if (spec["arch"], spec["width"]) != (stage.model.arch, stage.model.width):
        differing.append("model")
    return differing


def _run(
    preset: Preset,
    role: str,
    data_root: str | Path | None,
    out_dir: Path,
    resume: bool,
    device: str,
    method: str | None,
    callbacks: list | None,
) -> TrainResult:
    """Build the stage's data, model and method, and run the training loop."""
    stage = stage_of(preset, role)
    cfg = stage.train
    method_name = method or cfg.method
    if cfg.epochs < 1:
        raise ValueError(f"{role}.train.epochs must be at least 1, got {cfg.epochs}")
    root = resolve_data_root(preset, data_root)
    bench = get_benchmark(preset.benchmark, root)
    bench.require(root)
    dist = Distributed.from_env(device)
    torch_device = dist.device(device)
    spec = model_spec_for(
        bench, stage.model.arch, stage.model.width, stage.model.kwargs, stage.model.input_size
    )
    seed_everything(cfg.seed)
    weights = hub_weights(stage.model)
    model = build_model(
        spec, pretrained_file=weights.path if weights else stage.model.pretrained_file
    )
    if cfg.init_checkpoint:
        _start_from(model, spec, cfg.init_checkpoint)
    # Both sets are read every epoch: decoded once into a memory-mapped cache (oaml.data.decoded).
    train_set = dist.main_first(
        lambda: image_set_dataset(
            bench.train, root, spec, cfg.augment, cfg.train_subset, cfg.seed, decoded=True
        )
    )
    val_set = dist.main_first(lambda: image_set_dataset(bench.val, root, spec, decoded=True))
    method_module = create_method(method_name, cfg.loss)
    outliers = None
    # Only methods that train on outliers load them (a preset may name them for all methods).
    if cfg.outliers and method_module.needs_outliers:
        from oaml.synthesis.outlier_sets import mapped_outliers

        found = dist.main_first(lambda: mapped_outliers(cfg.outliers))
        outliers = OutlierImages(found.images, spec, found.latents)
    # Each method sets itself up (a distilling one attaches its teacher's outputs) and may
    # wrap the train set; the stage never asks which method it runs.
    train_set = method_module.prepare(
        PrepareContext(cfg, spec, model, train_set, bench, root, torch_device, outliers, dist)
    )
    lineage = _lineage(preset, role, method_name, bench.name, root, len(train_set))
    lineage["pretrained"] = weights.lineage() if weights else None
    lineage["processes"] = dist.world_size  # data-parallel ranks it was trained on
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
        dist=dist,
    )


def hub_weights(model: ModelConfig) -> HubWeights | None:
    """The hub weights `model.pretrained` names (None where it names none)."""
    if not model.pretrained:
        return None
    if model.pretrained_file:
        raise ValueError("set model.pretrained (the hub) or model.pretrained_file, not both")
    return fetch_weights(model.arch, model.pretrained)


def _lineage(
    preset: Preset, role: str, method: str, benchmark: str, root: Path, train_images: int
) -> dict:
    """What the checkpoint records about how it came to be (data, inputs, versions)."""
    stage = stage_of(preset, role)
    cfg = stage.train
    return {
        "preset": preset.name,
        "benchmark": benchmark,
        "role": role,
        "method": method,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "train_images": train_images,
        "data_root": str(root),
        "data_manifest_sha256": manifest_sha256(benchmark, root),
        "init_checkpoint": cfg.init_checkpoint,
        "outliers": cfg.outliers,
        "teacher_checkpoint": cfg.teacher_checkpoint,
        "pretrained_file": stage.model.pretrained_file,
        "oaml_version": __version__,
        "torch_version": str(torch.__version__),
    }
