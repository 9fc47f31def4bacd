import math

import pytest
import torch

from oaml.scores import ebo, energy, msp, score_fn


def test_energy_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    expected = -math.log(math.exp(1) + math.exp(2) + math.exp(3))
    assert energy(logits).item() == pytest.approx(expected)
    assert ebo(logits).item() == pytest.approx(-expected)
    # T logsumexp(z / T) with T = 2
    assert ebo(logits, 2.0).item() == pytest.approx(
        2 * math.log(math.exp(0.5) + math.exp(1) + math.exp(1.5))
    )


def test_msp_is_the_largest_probability():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert msp(logits).item() == pytest.approx(0.75)


def test_energy_is_stable_for_large_logits():
    assert torch.isfinite(ebo(torch.tensor([[1000.0, 999.0]]))).all()


def test_scores_by_name():
    assert score_fn("ebo") is ebo and score_fn("msp") is msp
    with pytest.raises(KeyError, match="known: ebo, gen, mls, msp"):
        score_fn("odin")
