"""The OAML recipe as steps shared by the pipeline's stages and `oaml bench quality`.

Shared inputs (the frozen teacher, the forward-diffused outliers) are built once per benchmark;
a student starts from cross-entropy and is fine-tuned by a method, as the paper does. The steps
change the typed preset (`with_inputs`, `finetuned`); training keeps every result on disk
(oaml.training.stage), so a killed job resumes.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

from oaml.config import Preset, with_train


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


def shared_inputs(
    preset: Preset, methods: set[str], root: Path, folder: Path, device: str, outliers=True
) -> dict[str, Path]:
    """Build the outliers (unless `outliers` is False) and the teacher that `methods` need
    under `folder` (what `with_inputs` points a student at)."""
    from oaml.synthesis.backends import preset_request, synthesize
    from oaml.training.stage import train_stage

    inputs: dict[str, Path] = {}
    if outliers and outlier_methods() & methods:
        backend, request = preset_request(preset, root, folder / "outliers")
        print(f"outliers: {preset.outliers.count} images by {backend}")
        synthesize(backend, request)
        inputs["outliers"] = folder / "outliers"
    if teacher_methods() & methods:
        print(f"teacher: {preset.teacher.model.arch} (width {preset.teacher.model.width})")
        teacher = train_stage(
            preset, "teacher", root, folder / "teacher", device=device, method="teacher"
        )
        inputs["teacher"] = teacher.checkpoint
    return inputs


def with_inputs(
    preset: Preset, outliers: str | Path | None = None, teacher: str | Path | None = None
) -> Preset:
    """The preset with its student pointed at an outlier folder and a teacher checkpoint."""
    changes: dict[str, Any] = {}
    if outliers is not None:
        changes["outliers"] = str(outliers)
    if teacher is not None:
        changes["teacher_checkpoint"] = str(teacher)
    return with_train(preset, "student", **changes)


def finetuned(preset: Preset, method: str, start: str | Path) -> Preset:
    """The preset whose student fine-tunes `start` with `method` for the preset's fine-tuning
    budget (`finetune.epochs` at `finetune.lr`, no warm-up) and that method's loss parameters."""
    budget = preset.finetune
    optim = replace(preset.student.train.optim, lr=budget.lr, warmup_epochs=0.0)
    return with_train(
        preset,
        "student",
        method=method,
        init_checkpoint=str(start),
        epochs=budget.epochs,
        optim=optim,
        loss=copy.deepcopy(budget.losses.get(method, {})),
    )


def evaluate_student(preset: Preset, checkpoint: Path, root: Path, device: str):
    """Evaluate on the preset's benchmark with the preset's score settings."""
    return evaluate_student_scores(preset, checkpoint, root, device)[preset.evaluation.score]


def evaluate_student_scores(
    preset: Preset, checkpoint: Path, root: Path, device: str, scores: tuple[str, ...] = ()
):
    """The preset's score and `scores`, from one pass of the model: {score: Evaluation}."""
    from oaml.evaluation.evaluate import EvalRequest, evaluate_scores
    from oaml.evaluation.postprocessors import ScoreSettings

    ev = preset.evaluation
    wanted = tuple(dict.fromkeys((ev.score, *scores)))
    settings = ScoreSettings(ev.temperature, ev.knn_k, ev.vim_dim)
    return evaluate_scores(
        EvalRequest(
            checkpoint, preset.benchmark, root, wanted, settings, batch_size=ev.batch_size,
            num_workers=ev.num_workers, device=device, fit_images=ev.fit_images,
        )
    )  # fmt: skip
