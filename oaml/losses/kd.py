"""Knowledge distillation from a frozen teacher: on logits, and on features through DT."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kd_logits(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(softmax(z_t / T) || softmax(z / T)), batch mean, scaled by T^2 (Hinton et al.)."""
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


class FeatureDistiller(nn.Module):
    """DT projection of teacher features to the student's width, then KL between softmaxes.

    DT = BatchNorm(teacher) -> Linear(teacher, student) -> ReLU -> BatchNorm(student), as the
    authors' trainer; the loss is KL(softmax(DT(h)) || softmax(f)), batch mean.
    """

    def __init__(self, teacher_dim: int, student_dim: int) -> None:
        super().__init__()
        self.project = nn.Sequential(
            nn.BatchNorm1d(teacher_dim),
            nn.Linear(teacher_dim, student_dim),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(student_dim),
        )

    def forward(self, teacher_features: torch.Tensor, student_features: torch.Tensor):
        target = F.log_softmax(self.project(teacher_features.detach()), dim=-1)
        return F.kl_div(
            F.log_softmax(student_features, dim=-1), target, reduction="batchmean", log_target=True
        )
