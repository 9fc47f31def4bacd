"""The one training loop, for every method and every model.

Read top to bottom: `train` seeds, builds the step (optimiser, schedule, mixed precision), maybe
resumes, then per epoch reseeds, runs the method's loss over every batch (`_run_epoch`),
validates and calibrates (`_validate`), and checkpoints atomically. Reseeding at every epoch
from (seed, epoch) makes a resumed run repeat exactly what an uninterrupted run does.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from oaml.config import TrainConfig, to_dict
from oaml.contract import Calibration
from oaml.device import autocast, autocast_dtype
from oaml.models.checkpoint import read_checkpoint, save_checkpoint
from oaml.models.factory import ModelSpec
from oaml.models.net import OamlNet
from oaml.models.predict import predict
from oaml.progress import progress
from oaml.scores import energy
from oaml.training.methods import Method
from oaml.training.optim import build_optimizer, build_scheduler

RESUME_FILE = "last.pt"
FINAL_FILE = "checkpoint.pt"


@dataclass
class EpochLog:
    """What one epoch produced (passed to callbacks, e.g. experiment tracking)."""

    epoch: int
    train: dict[str, float]
    val_accuracy: float | None
    images_per_second: float
    lr: float


@dataclass
class TrainResult:
    checkpoint: Path
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    # True when a finished checkpoint with the same settings was kept instead of training.
    reused: bool = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


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


@dataclass
class TrainStep:
    """One optimisation step of a method on a batch: loss, backward, optimiser and schedule."""

    forward: MixedPrecisionForward
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler

    @classmethod
    def build(
        cls,
        model: OamlNet,
        method: Method,
        cfg: TrainConfig,
        device: torch.device,
        total_steps: int,
        steps_per_epoch: int | None = None,
    ) -> TrainStep:
        """Optimiser over the model and the method's own nets, cosine schedule, loss scaling
        only where fp16 needs it."""
        optimizer = build_optimizer(model, method, cfg.optim)
        scheduler = build_scheduler(
            optimizer, total_steps, steps_per_epoch or total_steps, cfg.optim
        )
        fp16 = cfg.amp and autocast_dtype(device) == torch.float16
        scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        return cls(
            MixedPrecisionForward(model, device, cfg.amp), method, optimizer, scheduler, scaler
        )

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        terms = self.method(self.forward, batch)
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


def device_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    index: list[torch.Tensor],
    outlier_batches: Iterator[tuple[torch.Tensor, torch.Tensor]] | None,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """The batch a method sees, on `device`: images (channels_last), labels, the per-sample
    index where the set has one, and outliers (with latents) for methods that use them."""
    batch = {
        "images": images.to(device, non_blocking=True, memory_format=torch.channels_last),
        "labels": labels.to(device, non_blocking=True),
    }
    if index:
        batch["index"] = index[0].to(device, non_blocking=True)
    if outlier_batches is not None:
        outlier_images, outlier_latents = next(outlier_batches)
        batch["outlier_images"] = outlier_images.to(
            device, non_blocking=True, memory_format=torch.channels_last
        )
        if outlier_latents.numel():  # Stable Diffusion outliers: DeepCLUB's input
            batch["outlier_latents"] = outlier_latents.to(device, non_blocking=True)
    return batch


def endless_outliers(dataset: Dataset, batch_size: int, seed: int):
    """(images, latents) outlier batches without end, reshuffled on each pass from `seed`;
    latents are empty unless the outliers came from Stable Diffusion."""
    generator = torch.Generator().manual_seed(seed + 7919)
    while True:
        loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator
        )
        yielded = False
        for images, latents in loader:
            yielded = True
            yield images, latents
        if not yielded:
            raise ValueError(f"fewer outlier images ({len(dataset)}) than one batch ({batch_size})")


def _check_inputs(method: Method, train_set: Dataset, cfg: TrainConfig, outliers) -> None:
    if method.needs_outliers and (outliers is None or len(outliers) == 0):
        raise ValueError(
            "this method trains on outlier images: set train.outliers to the folder of an "
            "`oaml synthesize` run"
        )
    if len(train_set) < cfg.batch_size:
        raise ValueError(
            f"the training set has {len(train_set)} images, fewer than one batch "
            f"({cfg.batch_size}); lower train.batch_size or use more data"
        )


def _run_epoch(
    step: TrainStep, train_set: Dataset, outliers, cfg: TrainConfig, epoch: int, device
) -> tuple[dict[str, float], int, float]:
    """One pass over the training set: mean loss terms, images seen, seconds."""
    seed = _epoch_seed(cfg.seed, epoch)
    loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.num_workers,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    outlier_batches = (
        endless_outliers(outliers, cfg.outlier_batch_size or cfg.batch_size, seed)
        if step.method.needs_outliers
        else None
    )
    step.forward.model.train()
    step.method.train()
    sums: dict[str, float] = {}
    seen, tick = 0, time.perf_counter()
    bar = progress(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch")
    for images, labels, *index in bar:
        terms = step(device_batch(images, labels, index, outlier_batches, device))
        n = images.shape[0]
        seen += n
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach()) * n
        rate = seen / max(1e-9, time.perf_counter() - tick)
        bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", img_s=f"{rate:.0f}")
    return {k: v / max(1, seen) for k, v in sums.items()}, seen, time.perf_counter() - tick


def _validate(model: OamlNet, val_set: Dataset | None, cfg: TrainConfig, device, temperature):
    """Validation accuracy and the OOD calibration on it, or (None, None) without a val set.
    Full precision: the calibrated threshold must match fp32 evaluation and export."""
    if val_set is None or len(val_set) == 0:
        return None, None
    loader = DataLoader(val_set, batch_size=256, num_workers=cfg.num_workers)
    logits, labels = predict(model, loader, device, amp=False, desc="validate")
    val_energy = energy(torch.from_numpy(logits), temperature).numpy()
    calibration = Calibration.fit(val_energy, temperature, split="val").to_dict()
    return float((logits.argmax(1) == labels).mean()), calibration


def _history_row(log: EpochLog) -> dict[str, Any]:
    return {
        "epoch": log.epoch,
        **{f"train_{k}": v for k, v in log.train.items()},
        "val_accuracy": log.val_accuracy,
        "images_per_second": log.images_per_second,
        "lr": log.lr,
    }


def _print_epoch(log: EpochLog, epochs: int) -> None:
    accuracy = log.val_accuracy if log.val_accuracy is not None else float("nan")
    print(
        f"epoch {log.epoch}/{epochs} loss {log.train.get('loss', float('nan')):.4f} "
        f"val_acc {accuracy:.4f} {log.images_per_second:.0f} img/s"
    )


def train(
    model: OamlNet,
    spec: ModelSpec,
    method: Method,
    train_set: Dataset,
    val_set: Dataset | None,
    cfg: TrainConfig,
    out_dir: str | Path,
    device: torch.device,
    resume: bool = False,
    lineage: dict[str, Any] | None = None,
    callbacks: list[Callable[[EpochLog], None]] | None = None,
    temperature: float = 1.0,
    outliers: Dataset | None = None,
) -> TrainResult:
    """Train `model` with `method`; write `last.pt` each epoch and `checkpoint.pt` at the end."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # channels_last speeds convolutions on CPU (about 1.3x here) and under AMP on GPU.
    model.to(device, memory_format=torch.channels_last)
    method.to(device)
    _check_inputs(method, train_set, cfg, outliers)
    steps_per_epoch = len(train_set) // cfg.batch_size
    step = TrainStep.build(
        model, method, cfg, device, steps_per_epoch * cfg.epochs, steps_per_epoch
    )
    history: list[dict[str, Any]] = []
    first_epoch = 0
    resume_path = out_dir / RESUME_FILE
    if resume and resume_path.is_file():
        state = read_checkpoint(resume_path)
        _check_resumable(state, spec, cfg, resume_path)
        model.load_state_dict(state["state_dict"])
        step.load(state)
        history, first_epoch = list(state["history"]), int(state["epoch"])
        print(f"resuming from {resume_path} after epoch {first_epoch}/{cfg.epochs}")

    for epoch in range(first_epoch, cfg.epochs):
        seed_everything(_epoch_seed(cfg.seed, epoch))
        terms, seen, elapsed = _run_epoch(step, train_set, outliers, cfg, epoch, device)
        val_accuracy, calibration = _validate(model, val_set, cfg, device, temperature)
        lr = step.optimizer.param_groups[0]["lr"]
        log = EpochLog(epoch + 1, terms, val_accuracy, seen / max(1e-9, elapsed), lr)
        history.append(_history_row(log))
        _print_epoch(log, cfg.epochs)
        save_checkpoint(
            resume_path,
            model,
            spec,
            epoch=epoch + 1,
            **step.state(),
            history=history,
            train_config=to_dict(cfg),
            calibration=calibration,
            lineage=lineage or {},
        )
        for callback in callbacks or []:
            callback(log)
    return _finish(resume_path, out_dir / FINAL_FILE, model, spec, started)


def _finish(resume_path: Path, final_file: Path, model, spec, started: float) -> TrainResult:
    """The final checkpoint: the last epoch's state without optimiser and schedule."""
    final = read_checkpoint(resume_path)
    final_path = save_checkpoint(
        final_file,
        model,
        spec,
        epoch=final["epoch"],
        history=final["history"],
        train_config=final["train_config"],
        calibration=final["calibration"],
        lineage=final["lineage"],
        method_state=final["method_state"],
    )
    return TrainResult(
        final_path, int(final["epoch"]), final["history"], time.perf_counter() - started
    )


def changed_settings(checkpoint: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """The training settings of `cfg` that differ from those a checkpoint was written with."""
    saved, current = checkpoint.get("train_config", {}), to_dict(cfg)
    return sorted(k for k in current if saved.get(k) != current[k])


def _check_resumable(state: dict[str, Any], spec: ModelSpec, cfg: TrainConfig, path: Path) -> None:
    """Refuse to continue a run whose model or training settings differ from this one."""
    if state["spec"] != spec.to_dict():
        raise ValueError(
            f"{path} was written for another model ({state['spec']['arch']}, width "
            f"{state['spec']['width']}); resume with the same settings or use a new --out"
        )
    differing = changed_settings(state, cfg)
    if differing:
        raise ValueError(
            f"{path} was written with other training settings ({', '.join(differing)}); "
            "resume with the same settings or use a new --out"
        )
    if int(state["epoch"]) > cfg.epochs:
        raise ValueError(
            f"{path} already holds {state['epoch']} epochs, more than train.epochs={cfg.epochs}"
        )
