"""Forward-diffusion outliers: ID images noised through q(x_t | x_0) (the paper's "noisy
features obtained in the forward diffusion process").

x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps with Stable Diffusion's schedule (scaled_linear
betas 0.00085..0.012, 1000 steps) from diffusers' DDPMScheduler, t uniform in [t_min, t_max].
Images are written in shards (uint8, native size) with a manifest (synthesis.shards); each
shard's randomness comes from (seed, shard), so a resumed run writes what a whole run would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from oaml.data.benchmarks import get_benchmark
from oaml.data.imglist import load_image
from oaml.synthesis.id_images import as_hwc, training_entries
from oaml.synthesis.shards import ShardWriter, load_kind


@dataclass(frozen=True)
class ForwardDiffusionConfig:
    """Which ID images to noise, how much, and how to shard the output."""

    count: int = 10000
    t_min: int = 300
    t_max: int = 700
    shard_size: int = 2048
    seed: int = 0
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"


def scheduler(cfg: ForwardDiffusionConfig):
    """diffusers' DDPMScheduler with the configured (default: Stable Diffusion's) schedule."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule=cfg.beta_schedule,
    )


def noise_images(
    images: np.ndarray, timesteps: np.ndarray, generator: torch.Generator, sched
) -> np.ndarray:
    """uint8 images (N, H, W, C) -> their x_t at `timesteps`, back in uint8 (clipped)."""
    x0 = torch.from_numpy(images).float().div(127.5).sub(1.0).permute(0, 3, 1, 2)
    eps = torch.randn(x0.shape, generator=generator)
    xt = sched.add_noise(x0, eps, torch.from_numpy(timesteps).long())
    pixels = xt.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def _check_config(cfg: ForwardDiffusionConfig) -> None:
    if not 0 <= cfg.t_min <= cfg.t_max < cfg.num_train_timesteps:
        raise ValueError(
            f"need 0 <= t_min <= t_max < {cfg.num_train_timesteps}, "
            f"got t_min={cfg.t_min}, t_max={cfg.t_max}"
        )
    if cfg.count < 1 or cfg.shard_size < 1:
        raise ValueError("count and shard_size must be positive")


def synthesize(
    benchmark: str, data_root: str | Path, out_dir: str | Path, cfg: ForwardDiffusionConfig
) -> Path:
    """Noise `cfg.count` stratified ID training images into shards; return the manifest path."""
    _check_config(cfg)
    bench = get_benchmark(benchmark, data_root)
    entries, image_root, listed_sha = training_entries(benchmark, data_root, cfg.count, cfg.seed)
    sched = scheduler(cfg)
    writer = ShardWriter(out_dir, ("images",))
    chunks = [entries[s : s + cfg.shard_size] for s in range(0, len(entries), cfg.shard_size)]
    for number, chunk in writer.pending(chunks, "forward diffusion"):
        images = np.stack(
            [as_hwc(np.asarray(load_image(image_root / e.path, bench.image_mode))) for e in chunk]
        )
        rng = np.random.default_rng([cfg.seed, number])
        timesteps = rng.integers(cfg.t_min, cfg.t_max + 1, size=len(chunk))
        generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        noised = noise_images(images, timesteps, generator, sched)
        sources = np.array([e.path for e in chunk])
        writer.write(number, {"images": noised}, timesteps=timesteps, sources=sources)
    return writer.finish(
        "forward_diffusion",
        benchmark=benchmark,
        count=len(entries),
        params=asdict(cfg),
        source_imglist_sha256=listed_sha,
    )


def load_outlier_images(folder: str | Path) -> np.ndarray:
    """All images (N, H, W, C) uint8 of a finished synthesis run, in manifest order."""
    return load_kind(folder, "images")
