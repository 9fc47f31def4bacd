"""Optimiser and per-step cosine schedule (the paper's recipe), with a backbone/head split."""

from __future__ import annotations

import math

import torch
from torch import nn

from oaml.config import OptimConfig
from oaml.models.net import OamlNet


def param_groups(model: OamlNet, extra: nn.Module | None, cfg: OptimConfig) -> list[dict]:
    """Classifier at `lr`, the rest of the model at `backbone_lr` (if set), method params at lr."""
    head = {id(p) for p in model.classifier.parameters()}
    backbone = [p for p in model.parameters() if id(p) not in head and p.requires_grad]
    groups = [
        {"params": [p for p in model.classifier.parameters() if p.requires_grad], "lr": cfg.lr},
        {"params": backbone, "lr": cfg.backbone_lr if cfg.backbone_lr is not None else cfg.lr},
    ]
    if extra is not None:
        scales = extra.lr_scales() if hasattr(extra, "lr_scales") else [(extra.parameters(), 1.0)]
        for params, scale in scales:
            own = [p for p in params if p.requires_grad]
            if own:
                groups.append({"params": own, "lr": cfg.lr * scale})
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: OamlNet, extra: nn.Module | None, cfg: OptimConfig
) -> torch.optim.Optimizer:
    groups = param_groups(model, extra, cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}; known: sgd, adam, adamw")


def cosine_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine from 1 down to `min_ratio` at the last step."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int, cfg: OptimConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step cosine schedule over the whole run (stepped after every optimiser step)."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_factor(step, total_steps, warmup, cfg.min_lr_ratio)
    )
