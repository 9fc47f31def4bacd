"""`oaml bench train`: images/s of each stage's training step, before and after, in one run.

For every training stage of a preset (the teacher, the cross-entropy start, the fine-tuned
student) the same step of the one training loop (oaml.training.step.TrainStep) runs under two
settings, interleaved round by round so that a machine's drifting speed hits both alike:

- before: images decoded from their files on every step, float32 (the loop as it was);
- after: images read from the decoded uint8 cache, mixed precision where the hardware has it.

A step's cost does not depend on pixel or teacher values, so the student stage's frozen inputs
(teacher outputs, k-NN embeddings) and its outlier images are random arrays of the real shapes.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from oaml.bench.report import write_results
from oaml.config import Preset, StageConfig, load_preset, stage_of
from oaml.data.benchmarks import get_benchmark
from oaml.data.datasets import OutlierImages, WithRows, image_set_dataset, model_spec_for
from oaml.device import autocast_dtype, pick_device
from oaml.models.factory import build_model
from oaml.training.batches import device_batch, endless_outliers
from oaml.training.methods import create_method
from oaml.training.step import TrainStep

VARIANTS = {"before": {"decoded": False, "amp": False}, "after": {"decoded": True, "amp": True}}


@dataclass(frozen=True)
class StagePlan:
    """One training stage as the recipe runs it: which model, which method, which loss."""

    name: str
    role: str
    method: str
    loss: dict[str, Any]


def stage_plans(preset: Preset) -> list[StagePlan]:
    """The recipe's training stages: teacher, cross-entropy start, fine-tuned OAML student."""
    return [
        StagePlan("teacher", "teacher", "teacher", dict(preset.teacher.train.loss)),
        StagePlan("start", "student", "ce", {}),
        StagePlan("student", "student", "oaml", dict(preset.finetune.losses.get("oaml", {}))),
    ]


def _frozen_inputs(
    method, preset: Preset, bench, stage: StageConfig, spec, model, n_train: int, device
):
    """Random teacher outputs and k-NN embeddings of the real shapes for a distilling method."""
    teacher = preset.teacher.model
    teacher_dim = build_model(
        model_spec_for(bench, teacher.arch, teacher.width, teacher.kwargs, teacher.input_size)
    ).feature_dim
    rng = np.random.default_rng(0)
    classes, per_class = bench.num_classes, stage.train.knn_outliers_per_class
    method.attach(
        rng.standard_normal((classes, per_class, teacher_dim), dtype=np.float32),
        teacher_dim=teacher_dim,
        student_dim=model.feature_dim,
        outlier_dim=spec.in_chans * spec.input_size**2,
    )
    method.to(device)
    return {
        "teacher_logits": rng.standard_normal((n_train, classes), dtype=np.float32),
        "teacher_features": rng.standard_normal((n_train, teacher_dim), dtype=np.float32),
    }


def _time_variant(
    plan: StagePlan, preset: Preset, root: Path, variant: dict, steps: int, warmup: int, device
) -> float:
    """Images/s of `steps` training steps (after `warmup`), data loading included."""
    stage = stage_of(preset, plan.role)
    bench = get_benchmark(preset.benchmark, root)
    m = stage.model
    spec = model_spec_for(bench, m.arch, m.width, m.kwargs, m.input_size)
    cfg = replace(stage.train, amp=variant["amp"])
    torch.manual_seed(0)
    model = build_model(spec).to(device, memory_format=torch.channels_last)
    subset = min(cfg.train_subset or 10**9, (steps + warmup) * cfg.batch_size * 2)
    train_set = image_set_dataset(
        bench.train, root, spec, cfg.augment, subset=subset, seed=0, decoded=variant["decoded"]
    )
    method = create_method(plan.method, plan.loss).to(device)
    outliers = None
    if method.needs_teacher:
        frozen = _frozen_inputs(method, preset, bench, stage, spec, model, len(train_set), device)
        train_set = WithRows(train_set, frozen)
    if method.needs_outliers:
        images = np.random.default_rng(1).integers(
            0, 256, (4 * cfg.batch_size, spec.input_size, spec.input_size, spec.in_chans), np.uint8
        )
        outliers = OutlierImages(images, spec)
    step = TrainStep.build(model, method, cfg, device, total_steps=steps + warmup)
    loader = DataLoader(
        train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
        num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    outlier_batches = (
        endless_outliers(outliers, cfg.outlier_batch_size or cfg.batch_size, 0)
        if outliers is not None
        else None
    )
    model.train()
    method.train()
    seen, started = 0, 0.0
    for i, (images, labels, *extras) in enumerate(loader):
        if i == warmup:
            seen, started = 0, time.perf_counter()
        if i == warmup + steps:
            break
        step(device_batch(images, labels, extras, outlier_batches, device))
        seen += images.shape[0]
    return seen / max(1e-9, time.perf_counter() - started)


def bench_train(
    out: str | Path,
    preset_name: str = "quick",
    data_root: str | Path | None = None,
    steps: int = 12,
    warmup: int = 3,
    rounds: int = 2,
    device: str = "auto",
    stages: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Measure each stage's step before/after, `rounds` times interleaved; write train.json/md."""
    from oaml.training.stage import resolve_data_root

    preset = load_preset(preset_name)
    root = resolve_data_root(preset, data_root)
    torch_device = pick_device(device)
    plans = [p for p in stage_plans(preset) if stages is None or p.name in stages]
    samples: dict[str, dict[str, list[float]]] = {p.name: {v: [] for v in VARIANTS} for p in plans}
    for round_index in range(rounds):
        for plan in plans:
            for name, variant in VARIANTS.items():
                rate = _time_variant(plan, preset, root, variant, steps, warmup, torch_device)
                samples[plan.name][name].append(rate)
                print(f"round {round_index + 1} {plan.name} {name}: {rate:.0f} images/s")
    result = {
        "preset": preset.name,
        "setup": _setup(torch_device),  # the stamp's "machine" names the computer
        "steps": steps,
        "rounds": rounds,
        "variants": VARIANTS,
        "stages": {
            name: {
                **{v: statistics.median(rates) for v, rates in by_variant.items()},
                "samples": by_variant,
                "ratio": statistics.median(by_variant["after"])
                / statistics.median(by_variant["before"]),
            }
            for name, by_variant in samples.items()
        },
    }
    out = Path(out)
    result = write_results(out, "train.json", result)
    print(markdown(result))
    return result


def _setup(device: torch.device) -> dict[str, Any]:
    dtype = autocast_dtype(device)
    return {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "mixed_precision": str(dtype).removeprefix("torch.") if dtype else "none",
        "torch": torch.__version__,
    }


def markdown(result: dict[str, Any]) -> str:
    rows = "".join(
        f"| {name} | {s['before']:.0f} | {s['after']:.0f} | {s['ratio']:.2f}x |\n"
        for name, s in result["stages"].items()
    )
    machine = result["setup"]
    return (
        "| stage | before (images/s) | after (images/s) | after / before |\n|---|---|---|---|\n"
        + rows
        + f"\n{machine['device']}, {machine['threads']} threads, mixed precision "
        f"{machine['mixed_precision']}; median of {result['rounds']} interleaved rounds of "
        f"{result['steps']} steps\n"
    )
