"""One optimisation step of a method: the model under mixed precision, the method's loss (in
DistributedDataParallel under torchrun), backward, optimiser, schedule and loss scaling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from oaml.config import TrainConfig
from oaml.device import autocast, autocast_dtype
from oaml.distributed import Distributed
from oaml.models.net import OamlNet
from oaml.training.methods import Method
from oaml.training.optim import build_optimizer, build_scheduler


class MixedPrecisionForward(torch.nn.Module):
    """The model's forward under autocast, its outputs back in float32: convolutions run in
    bf16/fp16 where the hardware has it, while every loss term is computed in full precision."""

    def __init__(self, model: OamlNet, device: torch.device, enabled: bool) -> None:
        super().__init__()
        self.model, self.device, self.enabled = model, device, enabled

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with autocast(self.device, self.enabled):
            out = self.model(*args, **kwargs)
        if isinstance(out, tuple):
            return tuple(t.float() for t in out)
        return out.float()


class MethodLoss(nn.Module):
    """The model's forward and the method's loss as one module: what DistributedDataParallel
    wraps, so the method's own trainable nets (feature distiller, CLUB nets) are synchronised
    with the student instead of drifting apart on each rank."""

    def __init__(self, forward: MixedPrecisionForward, method: Method) -> None:
        super().__init__()
        self.forward_model, self.method = forward, method

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.method(self.forward_model, batch)


def data_parallel(loss: MethodLoss, dist: Distributed, device: torch.device) -> nn.Module:
    """`loss` in DistributedDataParallel (as is for one process). Batch norm becomes
    SyncBatchNorm on NCCL only (gloo has no fast path for it); frozen inputs the method keeps
    as non-persistent buffers (k-NN embeddings) are the same on every rank and never broadcast."""
    if not dist.enabled:
        return loss
    from torch.nn.parallel import DistributedDataParallel

    if dist.backend == "nccl":
        loss = nn.SyncBatchNorm.convert_sync_batchnorm(loss)
    saved = set(loss.state_dict())
    frozen = [name for name, _ in loss.named_buffers() if name not in saved]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(loss, frozen)
    return DistributedDataParallel(
        loss, device_ids=[device.index] if device.type == "cuda" else None
    )


@dataclass
class TrainStep:
    """One optimisation step of a method on a batch: loss, backward, optimiser and schedule."""

    forward: MixedPrecisionForward
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    # The module that computes the loss: MethodLoss, in DistributedDataParallel under torchrun.
    loss: nn.Module

    @classmethod
    def build(
        cls,
        model: OamlNet,
        method: Method,
        cfg: TrainConfig,
        device: torch.device,
        total_steps: int,
        steps_per_epoch: int | None = None,
        dist: Distributed | None = None,
    ) -> TrainStep:
        """Optimiser over the model and the method's own nets, cosine schedule, loss scaling
        only where fp16 needs it; the loss in DistributedDataParallel when `dist` has ranks."""
        optimizer = build_optimizer(model, method, cfg.optim)
        scheduler = build_scheduler(
            optimizer, total_steps, steps_per_epoch or total_steps, cfg.optim
        )
        fp16 = cfg.amp and autocast_dtype(device) == torch.float16
        scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        forward = MixedPrecisionForward(model, device, cfg.amp)
        loss = data_parallel(MethodLoss(forward, method), dist or Distributed(), device)
        return cls(forward, method, optimizer, scheduler, scaler, loss)

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        terms = self.loss(batch)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            lr = self.optimizer.param_groups[0]["lr"]
            raise FloatingPointError(
                f"loss became {loss.item()} (lr {lr:g}); lower the learning rate "
                "(optim.lr) or check the data"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return terms

    def state(self) -> dict[str, Any]:
        return {
            "method_state": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load(self, state: dict[str, Any]) -> None:
        self.method.load_state_dict(state["method_state"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
