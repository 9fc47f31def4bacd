"""`oaml data preset`: a starting preset for a benchmark, sized to a stated time budget.

The recipe's training cost is measured, not guessed: a few training steps of the student and
the teacher at the benchmark's input size and channels, on this machine, for each candidate
width. The widest student whose recipe (teacher and cross-entropy start for E epochs each, the
fine-tune for min(2, E)) fits the budget with at least MIN_EPOCHS epochs is chosen; where none
does, the narrowest with the epochs that fit, on a subset where even one epoch does not. The
rest of the budget is left to outlier synthesis, evaluation and export.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from oaml.config import Preset, load_preset, to_dict

WIDTHS = (1.0, 0.5, 0.25)  # student widths tried, widest first (the teacher is twice as wide)
MIN_EPOCHS, MAX_EPOCHS = 3, 30
TRAINING_SHARE = 0.7  # of the budget: the rest is outliers, evaluation, export, orchestration
FINETUNE_COST = 1.5  # a fine-tune step reads an outlier batch beside the ID batch


@dataclass(frozen=True)
class Plan:
    """The sizing chosen and what it rests on (written as the preset's header comments)."""

    width: float
    teacher_width: float
    epochs: int
    finetune_epochs: int
    batch_size: int
    train_subset: int | None
    train_images: int
    student_images_per_s: float
    teacher_images_per_s: float
    seconds: float  # the training the plan expects, of the budget's training share


def images_per_second(preset: Preset, role: str, width: float, bench, batch: int) -> float:
    """Training images/s of one model of `role` at `width` (a few steps on random pixels, on
    the device training would use: CUDA where there is one)."""
    from oaml.data.datasets import model_spec_for
    from oaml.device import pick_device
    from oaml.models.factory import build_model

    device = pick_device("auto")
    model_cfg = (preset.student if role == "student" else preset.teacher).model
    spec = model_spec_for(bench, model_cfg.arch, width, model_cfg.kwargs, model_cfg.input_size)
    torch.manual_seed(0)
    model = build_model(spec).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    size = spec.input_size
    pixels = torch.rand(batch, spec.in_chans, size, size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    labels = torch.arange(batch, device=device) % spec.num_classes

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(pixels), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up: kernel choice, allocations
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started, steps = time.perf_counter(), 2
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch / (time.perf_counter() - started)


def plan_for(preset: Preset, bench, train_images: int, minutes: float, batch: int = 16) -> Plan:
    """The widest student (and its teacher) whose recipe fits `minutes` on this machine."""
    budget = minutes * 60.0 * TRAINING_SHARE
    batch_size = int(min(128, max(16, train_images // 8)))
    measured = []
    for width in WIDTHS:
        teacher_width = min(1.0, 2 * width)
        student_speed = images_per_second(preset, "student", width, bench, batch)
        teacher_speed = images_per_second(preset, "teacher", teacher_width, bench, batch)
        per_epoch = train_images * (1 / teacher_speed + 1 / student_speed)
        finetune = train_images * FINETUNE_COST / student_speed
        epochs = int(min(MAX_EPOCHS, (budget - 2 * finetune) // per_epoch))
        measured.append((width, teacher_width, student_speed, teacher_speed, per_epoch, finetune))
        if epochs >= MIN_EPOCHS:
            seconds = epochs * per_epoch + 2 * finetune
            return Plan(width, teacher_width, epochs, 2, batch_size, None, train_images,
                        student_speed, teacher_speed, seconds)  # fmt: skip
    width, teacher_width, student_speed, teacher_speed, per_epoch, finetune = measured[-1]
    # The narrowest recipe at one epoch of each stage, on as many images as the budget allows.
    one_pass = per_epoch + finetune
    share = min(1.0, budget / one_pass)
    subset = None if share >= 1.0 else max(batch_size, int(train_images * share))
    epochs = max(1, int(budget // one_pass)) if subset is None else 1
    seconds = epochs * per_epoch * (subset or train_images) / train_images + finetune * (
        (subset or train_images) / train_images
    )
    return Plan(width, teacher_width, epochs, 1, batch_size, subset, train_images,
                student_speed, teacher_speed, seconds)  # fmt: skip


def starter_preset(
    benchmark: str, data_root: str | Path, minutes: float, base: str = "quick"
) -> tuple[dict[str, Any], Plan]:
    """The preset (as a YAML-ready dict) for `benchmark` sized to `minutes`, and its plan."""
    from oaml.data.benchmarks import get_benchmark
    from oaml.data.imglist import parse_imglist

    if minutes <= 0:
        raise ValueError(f"--minutes {minutes}: give a positive budget")
    root = Path(data_root).expanduser().resolve()
    bench = get_benchmark(benchmark, root)
    bench.require(root, [bench.train])
    preset = load_preset(base, [f"benchmark={benchmark}"])
    train_images = len(parse_imglist(bench.train.imglist_path(root)))
    plan = plan_for(preset, bench, train_images, minutes)
    sized = {
        "epochs": plan.epochs,
        "batch_size": plan.batch_size,
        "train_subset": plan.train_subset,
    }
    student = replace(
        preset.student,
        model=replace(preset.student.model, width=plan.width),
        train=replace(preset.student.train, **sized),
    )
    teacher = replace(
        preset.teacher,
        model=replace(preset.teacher.model, width=plan.teacher_width),
        train=replace(preset.teacher.train, **sized),
    )
    finetune = replace(preset.finetune, epochs=plan.finetune_epochs)
    data = to_dict(
        replace(
            preset, name=f"{benchmark}-starter", student=student, teacher=teacher,
            finetune=finetune, data_root=str(root),
            description=f"{benchmark}: the {base} recipe sized to {minutes:g} minutes here",
        )
    )  # fmt: skip
    return data, plan


def header(plan: Plan, benchmark: str, minutes: float) -> str:
    """The comment block that says how the preset was sized (so a user can resize it)."""
    import platform

    lines = [
        f"Starting preset for {benchmark}, written by `oaml data preset` for a {minutes:g}-minute"
        f" budget on {platform.node()} ({torch.get_num_threads()} CPU threads"
        f"{', CUDA' if torch.cuda.is_available() else ''}).",
        f"Measured here: student (width {plan.width:g}) {plan.student_images_per_s:.0f} "
        f"images/s, teacher (width {plan.teacher_width:g}) {plan.teacher_images_per_s:.0f} "
        "images/s in training steps at this data's size.",
        f"{plan.train_images} training images; {plan.epochs} epochs each for the teacher and the "
        f"cross-entropy start, {plan.finetune_epochs} of fine-tuning: about "
        f"{plan.seconds / 60:.1f} minutes of training ({TRAINING_SHARE:.0%} of the budget; the "
        "rest goes to outliers, evaluation and export).",
        "Edit freely: widths, epochs, batch sizes and train_subset are the knobs of the cost.",
    ]
    return "".join(f"# {line}\n" for line in lines)
