"""The batches training reads: the epoch's order (one process, or every rank's slice of the same
order), the endless outlier batches, and the batch dict a method sees."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from oaml.config import TrainConfig
from oaml.distributed import Distributed


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: a resumed run repeats exactly what an uninterrupted run does."""
    return seed * 1_000_003 + epoch


def device_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    extras: list[dict[str, torch.Tensor]],
    outlier_batches: Iterator[tuple[torch.Tensor, torch.Tensor]] | None,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """The batch a method sees, on `device`: images (channels_last), labels, the per-sample
    extras the set adds (e.g. cached teacher outputs), and outliers (with latents) for methods
    that use them."""
    batch = {
        "images": images.to(device, non_blocking=True, memory_format=torch.channels_last),
        "labels": labels.to(device, non_blocking=True),
    }
    for extra in extras:
        batch.update({k: v.to(device, non_blocking=True) for k, v in extra.items()})
    if outlier_batches is not None:
        outlier_images, outlier_latents = next(outlier_batches)
        batch["outlier_images"] = outlier_images.to(
            device, non_blocking=True, memory_format=torch.channels_last
        )
        if outlier_latents.numel():  # Stable Diffusion outliers: DeepCLUB's input
            batch["outlier_latents"] = outlier_latents.to(device, non_blocking=True)
    return batch


def endless_outliers(dataset: Dataset, batch_size: int, seed: int, dist: Distributed | None = None):
    """(images, latents) outlier batches without end, reshuffled on each pass from `seed`;
    latents are empty unless the outliers came from Stable Diffusion. Under data parallelism
    each rank reads its own slice of every pass (batch_size / world size per rank)."""
    dist = dist or Distributed()
    generator = torch.Generator().manual_seed(seed + 7919)
    sampler = None
    if dist.enabled:  # each pass in the order one process would draw it
        batch_size = per_rank_batch(batch_size, dist, "outlier_batch_size")
        sampler = SharedOrderSampler(
            dataset, dist.world_size, dist.rank, True, seed + 7919, True, continuing=True
        )
    while True:
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            drop_last=True,
            generator=generator if sampler is None else None,
        )
        yielded = False
        for images, latents in loader:
            yielded = True
            yield images, latents
        if not yielded:
            raise ValueError(f"fewer outlier images ({len(dataset)}) than one batch ({batch_size})")


def per_rank_batch(batch_size: int, dist: Distributed, setting: str = "batch_size") -> int:
    """Each rank's share of a global batch, which must split evenly over the ranks."""
    if batch_size % dist.world_size:
        raise ValueError(
            f"train.{setting}={batch_size} does not split over {dist.world_size} processes: "
            f"use a multiple of {dist.world_size}"
        )
    return batch_size // dist.world_size


def steps_per_epoch(num_samples: int, batch_size: int, dist: Distributed) -> int:
    """Optimiser steps in one epoch: the same count on every rank (drop_last everywhere)."""
    if not dist.enabled:
        return num_samples // batch_size
    return (num_samples // dist.world_size) // per_rank_batch(batch_size, dist)


class SharedOrderSampler(DistributedSampler):
    """A DistributedSampler whose permutation is the one a single process's shuffling
    DataLoader draws from its generator (the loader takes one int64 from the generator for its
    workers' base seed before the sampler runs, so that draw is repeated here). Rank r takes
    every world_size-th index from r: a global batch of ranks x per-rank batch then holds
    exactly the images of the single process's batch at the same step.

    The generator is seeded with seed + epoch at each pass (the training set, reseeded per
    epoch), or, with `continuing`, once and drawn on across passes (the endless outliers)."""

    def __init__(self, *args: Any, continuing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.continuing = torch.Generator().manual_seed(self.seed) if continuing else None

    def __iter__(self):
        generator = self.continuing or torch.Generator().manual_seed(self.seed + self.epoch)
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        order = torch.randperm(len(self.dataset), generator=generator)[: self.total_size]
        if self.continuing is not None:
            # RandomSampler draws one more (empty) permutation for the remainder of each pass.
            torch.randperm(len(self.dataset), generator=generator)
        return iter(order[self.rank : self.total_size : self.num_replicas].tolist())


class EpochBatches:
    """The training set's batches, one loader for the whole run (its workers persist across
    epochs where there are any). One process shuffles with a generator reseeded from
    (seed, epoch); ranks of several read their slices of the same order (SharedOrderSampler)."""

    def __init__(self, train_set: Dataset, cfg: TrainConfig, device, dist: Distributed) -> None:
        self.cfg, self.sampler = cfg, None
        self.generator = torch.Generator()
        workers = {
            "num_workers": cfg.num_workers,
            "pin_memory": device.type == "cuda",
            "persistent_workers": cfg.num_workers > 0,
            "prefetch_factor": 4 if cfg.num_workers else None,
        }
        if dist.enabled:
            self.sampler = SharedOrderSampler(
                train_set, dist.world_size, dist.rank, True, epoch_seed(cfg.seed, 0), True
            )
            batch_size = per_rank_batch(cfg.batch_size, dist)
            order = {"sampler": self.sampler}
        else:
            batch_size, order = cfg.batch_size, {"shuffle": True, "generator": self.generator}
        self.loader = DataLoader(
            train_set, batch_size=batch_size, drop_last=True, **order, **workers
        )

    def epoch(self, epoch: int) -> DataLoader:
        """The loader, set to yield `epoch`'s order."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        else:
            self.generator.manual_seed(epoch_seed(self.cfg.seed, epoch))
        return self.loader
