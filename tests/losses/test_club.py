import pytest
import torch

from oaml.losses.club import CLUB, club_bound, deep_club


def _pairwise(mu, logvar, y):
    """The CLUB formula with the explicit N x N pairwise term (the definition)."""
    var = logvar.exp()
    positive = (-((mu - y) ** 2) / (2 * var)).sum(-1)
    diff = y.unsqueeze(0) - mu.unsqueeze(1)  # [i, j, d] = y_j - mu_i
    negative = (-(diff**2) / (2 * var.unsqueeze(1))).mean(1).sum(-1)
    return (positive - negative).mean()


def test_fast_formula_equals_the_pairwise_definition():
    torch.manual_seed(0)
    mu, logvar, y = torch.randn(7, 5), torch.randn(7, 5).tanh(), torch.randn(7, 5)
    assert club_bound(mu, logvar, y).item() == pytest.approx(_pairwise(mu, logvar, y).item())


def test_identical_variables_have_positive_bound_by_hand():
    # q exact for y = x: mu = x, var = 1. positive = 0; negative_i = -mean_j (x_j - x_i)^2 / 2.
    x = torch.tensor([[0.0], [2.0]])
    # pairs (i, j): (0,0)=0, (0,1)=4, (1,0)=4, (1,1)=0 -> mean_j per i = 2 -> negative = -1
    assert club_bound(x, torch.zeros_like(x), x).item() == pytest.approx(1.0)


def test_independent_constant_target_has_zero_bound():
    # y carries no information about x (constant): positive and negative terms cancel.
    x = torch.randn(6, 3)
    y = torch.full((6, 3), 0.7)
    assert club_bound(x, torch.zeros_like(x), y).item() == pytest.approx(0.0, abs=1e-6)


def test_module_shapes_logvar_bounded_and_deep_variant():
    club = CLUB(768, 64, hidden=(32,))
    x, y = torch.randn(10, 768) * 100, torch.randn(12, 64)
    assert club(x, y).ndim == 0  # pairs the first 10 rows
    assert club.logvar(x).abs().max() <= 1.0
    deep = deep_club(4 * 8 * 8, 64, hidden=64)
    assert deep(torch.randn(5, 4, 8, 8), torch.randn(5, 64)).ndim == 0
    assert len([m for m in deep.mu if isinstance(m, torch.nn.Linear)]) == 3


def test_fitting_q_makes_the_bound_track_dependence():
    """Fit q by likelihood, then on fresh samples: dependent pairs bound well above zero,
    independent pairs near zero."""
    torch.manual_seed(0)
    mixing = torch.randn(4, 4)

    def draw(dependent: bool, n: int = 512):
        x = torch.randn(n, 4)
        y = x @ mixing + 0.1 * torch.randn(n, 4) if dependent else torch.randn(n, 4)
        return x, y

    bounds = []
    for dependent in (True, False):
        club = CLUB(4, 4, hidden=(32,))
        optimizer = torch.optim.Adam(club.parameters(), lr=1e-2)
        x, y = draw(dependent)
        for _ in range(300):
            optimizer.zero_grad()
            (-club.log_likelihood(x, y)).backward()
            optimizer.step()
        with torch.no_grad():
            bounds.append(club(*draw(dependent)).item())
    assert bounds[0] > 2.0 and abs(bounds[1]) < 0.5
