"""Cross-entropy: the baseline student, and the teacher's training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oaml.models.net import OamlNet
from oaml.training.methods.base import METHODS, TEACHER, Method


@METHODS.register("ce")
class CrossEntropy(Method):
    """Plain cross-entropy: the baseline student and the starting point of OAML."""

    def forward(self, model: OamlNet, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cross-entropy on the ID batch."""
        logits = model(batch["images"])
        ce = F.cross_entropy(logits, batch["labels"])
        return {"loss": ce, "ce": ce.detach()}


@METHODS.register("teacher")
class TeacherFineTune(CrossEntropy):
    """Teacher training/fine-tuning: cross-entropy on the ID classes (optimiser set by preset)."""

    role = TEACHER
