"""The OAML recipe as steps shared by the pipeline's stages and `oaml bench quality`.

Shared inputs (the frozen teacher, the forward-diffused outliers) are built once per benchmark;
a student starts from cross-entropy and is fine-tuned by a method, as the paper does. Every step
keeps its result on disk and is skipped when that result exists, so a killed job resumes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from oaml.config import Preset


def student_methods() -> list[str]:
    """The registered methods that train a student (what --method and --methods accept)."""
    from oaml.training.methods import STUDENT, method_names

    return method_names(role=STUDENT)


def outlier_methods() -> set[str]:
    """The registered methods that train on outliers (so the recipe builds them first)."""
    from oaml.training.methods import method_names

    return set(method_names(needs_outliers=True))


def teacher_methods() -> set[str]:
    """The registered methods that distil from a teacher (so the recipe trains one first)."""
    from oaml.training.methods import method_names

    return set(method_names(needs_teacher=True))


def quoted(value: Any) -> str:
    """An override value that survives YAML parsing (JSON is YAML): paths, mappings."""
    return json.dumps(value)


def trained(
    preset: Preset,
    role: str,
    root: Path,
    out: Path,
    device: str,
    method: str | None = None,
    callbacks: list | None = None,
) -> Path:
    """The stage's final checkpoint; trains (or resumes a killed run) only when it is missing.
    `callbacks` get each epoch's log (experiment tracking)."""
    from oaml.training.stage import train_stage

    final = out / "checkpoint.pt"
    if final.is_file():
        differing = _differences(final, preset, role, method)
        if differing:
            raise ValueError(
                f"{final} was trained with other settings ({', '.join(differing)}); "
                "use a new --out or delete that folder"
            )
        return final
    resume = (out / "last.pt").is_file()
    train_stage(
        preset, role, root, out, resume=resume, device=device, method=method, callbacks=callbacks
    )
    return final


def _differences(checkpoint: Path, preset: Preset, role: str, method: str | None) -> list[str]:
    """Settings under which `checkpoint` was trained that differ from the preset's stage."""
    from oaml.config import stage_of, to_dict
    from oaml.models.checkpoint import read_checkpoint

    payload = read_checkpoint(checkpoint)
    stage = stage_of(preset, role)
    saved, current = payload.get("train_config", {}), to_dict(stage.train)
    differing = sorted(k for k in current if saved.get(k) != current[k])
    if payload.get("lineage", {}).get("method") != (method or stage.train.method):
        differing.append("method")
    spec = payload["spec"]
    if (spec["arch"], spec["width"]) != (stage.model.arch, stage.model.width):
        differing.append("model")
    return differing


def shared_inputs(
    preset: Preset, methods: set[str], root: Path, folder: Path, device: str
) -> list[str]:
    """Build the outliers and the teacher that `methods` need under `folder`; return the
    overrides that point a student at them."""
    from oaml.synthesis.forward_diffusion import ForwardDiffusionConfig, synthesize

    overrides: list[str] = []
    bench = preset.bench
    if outlier_methods() & methods:
        print(f"outliers: {bench.outliers} forward-diffused training images")
        cfg = ForwardDiffusionConfig(count=bench.outliers, t_min=bench.t_min, t_max=bench.t_max)
        synthesize(preset.benchmark, root, folder / "outliers", cfg)
        overrides.append(f"student.train.outliers={quoted(str(folder / 'outliers'))}")
    if teacher_methods() & methods:
        print(f"teacher: {preset.teacher.model.arch} (width {preset.teacher.model.width})")
        teacher = trained(preset, "teacher", root, folder / "teacher", device, "teacher")
        overrides.append(f"student.train.teacher_checkpoint={quoted(str(teacher))}")
    return overrides


def finetune_overrides(preset: Preset, method: str, start: Path) -> list[str]:
    """Fine-tune `start` with `method` for the preset's bench budget and loss parameters."""
    bench = preset.bench
    return [
        f"student.train.method={method}",
        f"student.train.init_checkpoint={quoted(str(start))}",
        f"student.train.epochs={bench.finetune_epochs}",
        f"student.train.optim.lr={bench.finetune_lr}",
        "student.train.optim.warmup_epochs=0",
        f"student.train.loss={quoted(bench.losses.get(method, {}))}",
    ]


def evaluate_student(preset: Preset, checkpoint: Path, root: Path, device: str):
    """Evaluate on the preset's benchmark with the preset's score settings."""
    from oaml.evaluation.evaluate import evaluate

    ev = preset.evaluation
    return evaluate(
        checkpoint,
        preset.benchmark,
        root,
        score=ev.score,
        temperature=ev.temperature,
        batch_size=ev.batch_size,
        device=device,
    )
