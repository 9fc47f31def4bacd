import math

import pytest
import torch

from oaml.losses.energy import energy_margin_loss


def _logits_with_energy(value: float, classes: int = 4) -> torch.Tensor:
    """Equal logits z with -logsumexp = value: z = -value - log(classes)."""
    return torch.full((1, classes), -value - math.log(classes))


def test_zero_at_the_margins():
    loss = energy_margin_loss(_logits_with_energy(-23.0), _logits_with_energy(-5.0))
    assert loss.item() == pytest.approx(0.0, abs=1e-8)


def test_zero_inside_the_margins():
    loss = energy_margin_loss(_logits_with_energy(-30.0), _logits_with_energy(-1.0))
    assert loss.item() == 0.0


def test_squared_hinge_beyond_the_margins():
    # ID energy -20 is 3 above m_in; outlier energy -9 is 4 below m_out: 3^2 + 4^2 = 25.
    loss = energy_margin_loss(_logits_with_energy(-20.0), _logits_with_energy(-9.0))
    assert loss.item() == pytest.approx(25.0, rel=1e-5)


def test_means_over_each_batch():
    logits_in = torch.cat([_logits_with_energy(-20.0), _logits_with_energy(-30.0)])  # 9, 0
    logits_out = torch.cat([_logits_with_energy(-7.0), _logits_with_energy(0.0)])  # 4, 0
    assert energy_margin_loss(logits_in, logits_out).item() == pytest.approx(4.5 + 2.0, rel=1e-5)
