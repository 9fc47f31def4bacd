"""Energy-bounded outlier exposure (Liu et al. 2020), the OE baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oaml.losses.energy import energy_margin_loss
from oaml.models.net import OamlNet
from oaml.training.methods.base import METHODS, Method


@METHODS.register("oe_energy")
class EnergyOutlierExposure(Method):
    """Cross-entropy plus energy margins on outlier images.

    Margins default to the paper's CIFAR-10 values (m_in = -23, m_out = -5), weight 0.1.
    """

    needs_outliers = True

    def __init__(
        self, weight: float = 0.1, m_in: float = -23.0, m_out: float = -5.0, temperature=1.0
    ) -> None:
        super().__init__()
        self.weight, self.m_in, self.m_out, self.temperature = weight, m_in, m_out, temperature

    def forward(self, model: OamlNet, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cross-entropy on the ID half, energy margins on both halves."""
        n = batch["images"].shape[0]
        # One forward pass over ID and outliers together: batch norm sees both, as in the paper.
        logits = model(torch.cat([batch["images"], batch["outlier_images"]]))
        ce = F.cross_entropy(logits[:n], batch["labels"])
        margin = energy_margin_loss(logits[:n], logits[n:], self.m_in, self.m_out, self.temperature)
        return {"loss": ce + self.weight * margin, "ce": ce.detach(), "energy": margin.detach()}
