"""The method base class, its registry and the context a method prepares its training from.

A method is a loss module: `forward(model, batch)` returns a dict of named terms with the total
as 'loss'. It declares what it needs (outliers, a teacher) so no caller keeps a list of names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from oaml.distributed import Distributed
from oaml.registry import Registry

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from oaml.config import TrainConfig
    from oaml.data.benchmarks import BenchmarkSpec
    from oaml.data.datasets import OutlierImages
    from oaml.models.factory import ModelSpec
    from oaml.models.net import OamlNet

METHODS: Registry[type[Method]] = Registry("method")

STUDENT = "student"
TEACHER = "teacher"


@dataclass(frozen=True)
class PrepareContext:
    """What a method may use to prepare its training: the stage's inputs, already built."""

    cfg: TrainConfig
    spec: ModelSpec
    model: OamlNet
    train_set: Dataset
    bench: BenchmarkSpec
    data_root: Path
    device: torch.device
    outliers: OutlierImages | None = None
    # The data-parallel group (one process by default): ranks share work such as the cache.
    dist: Distributed = field(default_factory=Distributed)


class Method(nn.Module):
    """Base class: `forward(model, batch)` -> {'loss': total, '<term>': value, ...}.

    `needs_outliers`: the engine adds a batch of outlier images as batch['outlier_images']
    (and, for Stable Diffusion outliers, their latents as batch['outlier_latents']).
    `needs_teacher`: the method distils from `train.teacher_checkpoint` (built before it).
    `role`: which model of a preset the method trains, 'student' or 'teacher'.
    """

    needs_outliers: ClassVar[bool] = False
    needs_teacher: ClassVar[bool] = False
    role: ClassVar[str] = STUDENT

    def prepare(self, context: PrepareContext) -> Dataset:
        """Set the method up before training and return the set to train on (default: as is)."""
        return context.train_set

    def lr_scales(self) -> list[tuple[list[nn.Parameter], float]]:
        """The method's own trainable parameters, each group with a multiplier of the base lr."""
        own = [p for p in self.parameters() if p.requires_grad]
        return [(own, 1.0)] if own else []

    def forward(self, model: OamlNet, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss terms of one batch; subclasses implement it."""
        raise NotImplementedError


def create_method(name: str, params: dict[str, Any] | None = None) -> Method:
    """Build a registered method with its preset parameters (unknown names are an error)."""
    cls = METHODS.get(name)
    try:
        return cls(**(params or {}))
    except TypeError as exc:
        raise ValueError(f"method {name!r} does not take these loss parameters: {exc}") from None


def method_names(
    role: str | None = None, needs_outliers: bool | None = None, needs_teacher: bool | None = None
) -> list[str]:
    """Registered method names, filtered by what the methods declare (None: either)."""
    wanted = {"role": role, "needs_outliers": needs_outliers, "needs_teacher": needs_teacher}
    return [
        name
        for name in METHODS
        if all(v is None or getattr(METHODS.get(name), k) == v for k, v in wanted.items())
    ]
