"""Between-class mixes: each outlier blends two ID training images of different classes, by
mixup (a pixel blend at lambda in [lam_min, lam_max]) or cutmix (a box of the second image
pasted into the first, covering that fraction of it), half each.

Neither class should claim such an image, which makes it a cheap near-OOD baseline for the
generator's outliers. Each shard's randomness comes from (seed, shard), so a resumed run writes
what a whole run would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from oaml.synthesis.id_images import load_training_images
from oaml.synthesis.shards import ShardWriter


@dataclass(frozen=True)
class ClassMixConfig:
    count: int = 10000
    lam_min: float = 0.35
    lam_max: float = 0.65
    shard_size: int = 2048
    seed: int = 0


def other_class_partners(
    labels: np.ndarray, indices: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """For each of `indices` i, a random index j with labels[j] != labels[i]."""
    partners = rng.integers(len(labels), size=len(indices))
    same = labels[partners] == labels[indices]
    while same.any():  # redraw the few that hit their own class
        partners[same] = rng.integers(len(labels), size=int(same.sum()))
        same = labels[partners] == labels[indices]
    return partners


def mixup(first: np.ndarray, second: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """lam * first + (1 - lam) * second per image, uint8."""
    weights = lam.reshape(-1, 1, 1, 1)
    blended = weights * first.astype(np.float32) + (1.0 - weights) * second.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def cutmix(
    first: np.ndarray, second: np.ndarray, area: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """`first` with a box of `second` pasted in, the box covering `area` of each image."""
    out = first.copy()
    height, width = first.shape[1:3]
    for i, fraction in enumerate(area):
        box_h = max(1, min(height, round(height * np.sqrt(fraction))))
        box_w = max(1, min(width, round(height * width * fraction / box_h)))
        top = int(rng.integers(height - box_h + 1))
        left = int(rng.integers(width - box_w + 1))
        out[i, top : top + box_h, left : left + box_w] = second[
            i, top : top + box_h, left : left + box_w
        ]
    return out


def mix_batch(
    images: np.ndarray, labels: np.ndarray, indices: np.ndarray, cfg: ClassMixConfig, rng
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mixes for `indices` (first halves mixup, second cutmix): images, partners, lambdas."""
    if len(np.unique(labels)) < 2:
        raise ValueError("between-class mixing needs ID images of at least 2 classes")
    partners = other_class_partners(labels, indices, rng)
    lam = rng.uniform(cfg.lam_min, cfg.lam_max, size=len(indices)).astype(np.float32)
    half = len(indices) // 2
    first, second = images[indices], images[partners]
    mixed = np.concatenate(
        [
            mixup(first[:half], second[:half], lam[:half]),
            cutmix(first[half:], second[half:], 1.0 - lam[half:], rng),
        ]
    )
    return mixed, partners, lam


def synthesize(
    benchmark: str, data_root: str | Path, out_dir: str | Path, cfg: ClassMixConfig
) -> Path:
    """`cfg.count` between-class mixes of stratified ID training images; the manifest path."""
    if not 0.0 < cfg.lam_min <= cfg.lam_max < 1.0:
        raise ValueError(f"need 0 < lam_min <= lam_max < 1, got {cfg.lam_min}, {cfg.lam_max}")
    if cfg.count < 1 or cfg.shard_size < 1:
        raise ValueError("count and shard_size must be positive")
    found = load_training_images(benchmark, data_root, cfg.count, cfg.seed)
    order = np.arange(len(found.images))
    chunks = [order[s : s + cfg.shard_size] for s in range(0, len(order), cfg.shard_size)]
    writer = ShardWriter(out_dir, ("images",))
    for number, chunk in writer.pending(chunks, "class mixing"):
        rng = np.random.default_rng([cfg.seed, number])
        mixed, partners, lam = mix_batch(found.images, found.labels, chunk, cfg, rng)
        sources = np.array([found.entries[i].path for i in chunk])
        partner_paths = np.array([found.entries[i].path for i in partners])
        writer.write(number, {"images": mixed}, sources=sources, partners=partner_paths, lam=lam)
    return writer.finish(
        "class_mix",
        benchmark=benchmark,
        count=len(order),
        params=asdict(cfg),
        source_imglist_sha256=found.imglist_sha256,
    )
