"""Energy-bounded outlier exposure (Liu et al., NeurIPS 2020).

L = E_in[max(0, E(x_in) - m_in)^2] + E_out[max(0, m_out - E(x_out))^2], E = -T logsumexp(z/T):
ID energies are pushed below m_in and outlier energies above m_out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oaml.scores import energy


def energy_margin_loss(
    logits_in: torch.Tensor,
    logits_out: torch.Tensor,
    m_in: float = -23.0,
    m_out: float = -5.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Squared hinge on ID energies above m_in plus outlier energies below m_out."""
    e_in = energy(logits_in, temperature)
    e_out = energy(logits_out, temperature)
    return F.relu(e_in - m_in).pow(2).mean() + F.relu(m_out - e_out).pow(2).mean()
