"""DreamOOD in miniature: outliers decoded from the boundary of the generator's class-structured
latent space (oaml.synthesis.generator), with their latents kept for DeepCLUB.

Half of them come from DreamOOD's k-NN sampler run per class on the posterior means of that
class's training images (the candidates farthest from the class survive); the other half
interpolate the latents of two images of different classes (mixing their classes' conditions).
Shards are seeded from (seed, shard), so a resumed run writes what a whole run would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from oaml.synthesis.class_mix import other_class_partners
from oaml.synthesis.generator import (
    GeneratorConfig,
    as_uint8,
    as_unit,
    load_generator,
    train_generator,
)
from oaml.synthesis.id_images import load_training_images
from oaml.synthesis.knn import KnnConfig, sample_class
from oaml.synthesis.shards import ShardWriter


@dataclass(frozen=True)
class GeneratedOutliersConfig:
    count: int = 10000
    boundary_fraction: float = 0.5  # the rest: between-class latent interpolations
    per_class: int = 1000  # training latents per class the k-NN sampler reads
    # k-NN sampler in latent space (unit prior variance, so sigma is in those units); keep 1
    # per boundary point, since the 2 farthest candidates of one point decode alike.
    knn: KnnConfig = field(
        default_factory=lambda: KnnConfig(k=100, select=50, sigma=0.5, candidates=200, keep=1)
    )
    lam_min: float = 0.35
    lam_max: float = 0.65
    shard_size: int = 2048
    seed: int = 0
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)


@torch.no_grad()
def posterior_means(model, images: np.ndarray, batch: int = 1024) -> np.ndarray:
    """mu(x) of uint8 images (N, H, W, C) -> (N, latent_dim) float32."""
    parts = [model.encode(as_unit(images[s : s + batch]))[0] for s in range(0, len(images), batch)]
    return torch.cat(parts).numpy().astype(np.float32)


@torch.no_grad()
def decode(model, latents: np.ndarray, batch: int = 1024) -> np.ndarray:
    """uint8 images (N, H, W, C) the decoder draws for latents (N, latent_dim)."""
    parts = [
        as_uint8(model.decode(torch.from_numpy(latents[s : s + batch])))
        for s in range(0, len(latents), batch)
    ]
    return np.concatenate(parts)


def boundary_latents(
    latents: np.ndarray, labels: np.ndarray, count: int, cfg: GeneratedOutliersConfig, rng
) -> np.ndarray:
    """`count` k-NN boundary latents spread evenly over the classes."""
    classes = np.unique(labels)
    shares = np.diff(np.linspace(0, count, len(classes) + 1).round().astype(int))
    found = []
    for label, share in zip(classes, shares, strict=True):
        own = latents[labels == label][: cfg.per_class]
        if share and len(own) >= 2:
            knn = KnnConfig(**{**asdict(cfg.knn), "k": min(cfg.knn.k, len(own) - 1),
                               "select": min(cfg.knn.select, len(own))})  # fmt: skip
            found.append(sample_class(own, int(share), knn, rng, backend="numpy"))
    return np.concatenate(found).astype(np.float32) if found else np.empty((0, latents.shape[1]))


def mixed_latents(
    latents: np.ndarray, labels: np.ndarray, count: int, cfg: GeneratedOutliersConfig, rng
) -> np.ndarray:
    """`count` interpolations lam * z_a + (1 - lam) * z_b of two images of different classes."""
    first = rng.integers(len(latents), size=count)
    second = other_class_partners(labels, first, rng)
    lam = rng.uniform(cfg.lam_min, cfg.lam_max, size=(count, 1)).astype(np.float32)
    return lam * latents[first] + (1.0 - lam) * latents[second]


def synthesize(
    benchmark: str,
    data_root: str | Path,
    out_dir: str | Path,
    cfg: GeneratedOutliersConfig,
    cache: str | Path,
    device: str = "auto",
) -> Path:
    """Train (or find) the generator, sample and decode `cfg.count` outliers; the manifest."""
    if not 0.0 <= cfg.boundary_fraction <= 1.0 or cfg.count < 1 or cfg.shard_size < 1:
        raise ValueError("need 0 <= boundary_fraction <= 1 and a positive count and shard_size")
    from oaml.data.benchmarks import get_benchmark

    found = load_training_images(benchmark, data_root, cfg.generator.images, cfg.seed)
    classes = get_benchmark(benchmark, data_root).num_classes
    folder = train_generator(
        found.images, found.labels, classes, cache, cfg.generator, device=device
    )
    model = load_generator(folder)
    latents = posterior_means(model, found.images)
    sizes = [min(cfg.shard_size, cfg.count - s) for s in range(0, cfg.count, cfg.shard_size)]
    writer = ShardWriter(out_dir, ("images", "latents"))
    for number, size in writer.pending(sizes, "generated outliers"):
        rng = np.random.default_rng([cfg.seed, number])
        on_boundary = round(size * cfg.boundary_fraction)
        z = np.concatenate(
            [
                boundary_latents(latents, found.labels, on_boundary, cfg, rng),
                mixed_latents(latents, found.labels, size - on_boundary, cfg, rng),
            ]
        ).astype(np.float32)
        kind = np.array(["boundary"] * on_boundary + ["mix"] * (size - on_boundary))
        writer.write(number, {"images": decode(model, z), "latents": z}, sampled_by=kind)
    return writer.finish(
        "generator",
        benchmark=benchmark,
        count=cfg.count,
        params=asdict(cfg),
        generator=str(folder),
        source_imglist_sha256=found.imglist_sha256,
    )
