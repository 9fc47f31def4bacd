"""Training methods as loss modules: each returns a dict of named terms with the total as 'loss'.

The engine never special-cases a method; a new method is one class and one decorator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oaml.models.net import OamlNet
from oaml.registry import Registry

METHODS: Registry[type[nn.Module]] = Registry("method")


class Method(nn.Module):
    """Base class: `forward(model, batch)` -> {'loss': total, '<term>': value, ...}."""

    def forward(self, model: OamlNet, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@METHODS.register("ce")
class CrossEntropy(Method):
    """Plain cross-entropy: the baseline student and the starting point of OAML."""

    def forward(self, model: OamlNet, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = model(batch["images"])
        ce = F.cross_entropy(logits, batch["labels"])
        return {"loss": ce, "ce": ce.detach()}


@METHODS.register("teacher")
class TeacherFineTune(CrossEntropy):
    """Teacher training/fine-tuning: cross-entropy on the ID classes (optimiser set by preset)."""


def create_method(name: str) -> Method:
    return METHODS.get(name)()
