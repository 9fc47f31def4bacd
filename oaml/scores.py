"""OOD confidence scores from logits: higher means more in-distribution.

Implemented once, on tensors, so training calibration, evaluation and the exported graph agree.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from oaml.registry import Registry

SCORES: Registry[Callable[[torch.Tensor, float], torch.Tensor]] = Registry("score")


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Free energy E(x) = -T logsumexp(z / T) (lower = more in-distribution)."""
    return -temperature * torch.logsumexp(logits / temperature, dim=-1)


@SCORES.register("ebo")
def ebo(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Energy-based OOD confidence (Liu et al. 2020): -E(x) = T logsumexp(z / T)."""
    return -energy(logits, temperature)


@SCORES.register("msp")
def msp(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Maximum softmax probability (Hendrycks & Gimpel 2017), with optional temperature."""
    return torch.softmax(logits / temperature, dim=-1).max(dim=-1).values


@SCORES.register("mls")
def mls(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Maximum logit (Hendrycks et al. 2022); the temperature only rescales it."""
    return logits.max(dim=-1).values / temperature


@SCORES.register("gen")
def gen(logits: torch.Tensor, temperature: float = 1.0, gamma: float = 0.1, top: int = 100):
    """Generalized entropy (Liu et al., CVPR 2023): -sum over the `top` largest softmax
    probabilities of p^gamma (1 - p)^gamma (OpenOOD: gamma 0.1, M = 100).

    Computed in log space: log p from the logits, and log(1 - p) as the log of the other
    classes' share, so a confident p = 1 - 1e-5 does not lose 1 - p to float32 cancellation
    (0.1th powers magnify that error about 1000-fold)."""
    z = logits / temperature
    log_total = torch.logsumexp(z, dim=-1, keepdim=True)
    top_z, top_index = z.topk(min(top, z.shape[-1]), dim=-1)
    classes = torch.arange(z.shape[-1], device=z.device)
    itself = classes == top_index.unsqueeze(-1)  # [N, M, C]: class i among the others
    others = z.unsqueeze(1).masked_fill(itself, float("-inf"))
    log_rest = torch.logsumexp(others, dim=-1) - log_total
    return -torch.exp(gamma * (top_z - log_total + log_rest)).sum(dim=-1)


def score_fn(name: str) -> Callable[[torch.Tensor, float], torch.Tensor]:
    return SCORES.get(name)
