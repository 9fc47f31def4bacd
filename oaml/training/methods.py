"""Training methods as loss modules: each returns a dict of named terms with the total as 'loss'.

The engine never special-cases a method; a new method is one class and one decorator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oaml.losses.energy import energy_margin_loss
from oaml.models.net import OamlNet
from oaml.registry import Registry

METHODS: Registry[type[nn.Module]] = Registry("method")


class Method(nn.Module):
    """Base class: `forward(model, batch)` -> {'loss': total, '<term>': value, ...}.

    `needs_outliers`: the engine adds a batch of outlier images as batch['outlier_images']
    (and, for Stable Diffusion outliers, their latents as batch['outlier_latents']).
    """

    needs_outliers = False

    def lr_scales(self) -> list[tuple[list[nn.Parameter], float]]:
        """The method's own trainable parameters, each group with a multiplier of the base lr."""
        own = [p for p in self.parameters() if p.requires_grad]
        return [(own, 1.0)] if own else []

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


@METHODS.register("oe_energy")
class EnergyOutlierExposure(Method):
    """Cross-entropy plus energy-bounded outlier exposure (Liu et al. 2020), the OE baseline.

    Margins default to the paper's CIFAR-10 values (m_in = -23, m_out = -5), weight 0.1.
    """

    needs_outliers = True

    def __init__(
        self, weight: float = 0.1, m_in: float = -23.0, m_out: float = -5.0, temperature=1.0
    ) -> None:
        super().__init__()
        self.weight, self.m_in, self.m_out, self.temperature = weight, m_in, m_out, temperature

    def forward(self, model: OamlNet, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = batch["images"].shape[0]
        # One forward pass over ID and outliers together: batch norm sees both, as in the paper.
        logits = model(torch.cat([batch["images"], batch["outlier_images"]]))
        ce = F.cross_entropy(logits[:n], batch["labels"])
        margin = energy_margin_loss(logits[:n], logits[n:], self.m_in, self.m_out, self.temperature)
        return {"loss": ce + self.weight * margin, "ce": ce.detach(), "energy": margin.detach()}


def create_method(name: str, params: dict | None = None) -> Method:
    """Build a registered method with its preset parameters (unknown names are an error)."""
    cls = METHODS.get(name)
    try:
        return cls(**(params or {}))
    except TypeError as exc:
        raise ValueError(f"method {name!r} does not take these loss parameters: {exc}") from None


# Methods defined in their own modules register themselves on import.
from oaml.training import oaml_method  # noqa: E402, F401
