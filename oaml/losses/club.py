"""CLUB: a contrastive log-ratio upper bound of mutual information (Cheng et al., ICML 2020).

A variational Gaussian q(y|x) = N(mu(x), exp(logvar(x))) gives, for paired samples (x_i, y_i),

    I(x; y) <= mean_i[ log q(y_i|x_i) ] - mean_i mean_j[ log q(y_j|x_i) ]

(the normalising constants cancel). OAML minimises this bound between outlier representations x
and ID features y, pushing the student's features to carry no information about the outliers.
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, last: nn.Module | None) -> nn.Module:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU(inplace=True)]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)


def club_bound(mu: torch.Tensor, logvar: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The CLUB estimate for given q parameters (mu, logvar of shape N x D) and targets y (N x D).

    positive_i = sum_d -(mu_id - y_id)^2 / (2 var_id)
    negative_i = sum_d mean_j -(y_jd - mu_id)^2 / (2 var_id)
    The mean over j is expanded, (y_j - mu_i)^2 averaged over j = (mu_i - E y)^2 + Var y, so the
    cost is O(N D) instead of the O(N^2 D) pairwise tensor.
    """
    inv_var = torch.exp(-logvar)
    positive = -((mu - y) ** 2) * inv_var / 2
    y_mean = y.mean(dim=0, keepdim=True)
    y_var = y.var(dim=0, unbiased=False, keepdim=True)
    negative = -((mu - y_mean) ** 2 + y_var) * inv_var / 2
    return (positive.sum(-1) - negative.sum(-1)).mean()


class CLUB(nn.Module):
    """MI upper bound between x (outlier representations) and y (ID features).

    mu and logvar are MLPs x_dim -> hidden -> y_dim, the logvar one ending in tanh (as the paper's
    code); `hidden` with several widths gives the deep variant used for diffusion latents.
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: tuple[int, ...] = (512,)) -> None:
        super().__init__()
        self.mu = _mlp(x_dim, hidden, y_dim, None)
        self.logvar = _mlp(x_dim, hidden, y_dim, nn.Tanh())

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The bound on a paired batch (the first min(len(x), len(y)) rows of each)."""
        n = min(x.shape[0], y.shape[0])
        x, y = x[:n].flatten(1), y[:n].flatten(1)
        return club_bound(self.mu(x), self.logvar(x), y)

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """mean log q(y|x) up to a constant: what fitting q maximises."""
        n = min(x.shape[0], y.shape[0])
        x, y = x[:n].flatten(1), y[:n].flatten(1)
        mu, logvar = self.mu(x), self.logvar(x)
        return (-((mu - y) ** 2) * torch.exp(-logvar) - logvar).sum(-1).mean()


def deep_club(x_dim: int, y_dim: int, hidden: int = 1024) -> CLUB:
    """The deep CLUB variant for high-dimensional inputs (e.g. 4x64x64 diffusion latents)."""
    return CLUB(x_dim, y_dim, hidden=(hidden, hidden // 2))
