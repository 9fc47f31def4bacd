"""Finished outlier sets as training reads them, whichever backend wrote them: forward-diffused
images, or Stable Diffusion's decoded images with their final latents (DeepCLUB's input)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oaml.synthesis.shards import load_kind, read_manifest, shard_files


@dataclass(frozen=True)
class OutlierSet:
    images: np.ndarray  # (N, H, W, C) uint8
    latents: np.ndarray | None = None  # (N, ...) float32, where the backend kept latents


def load_outliers(folder: str | Path) -> OutlierSet:
    """The images (and latents, where the backend wrote them) in manifest order."""
    manifest = read_manifest(folder)
    images = load_kind(folder, "images", manifest)
    if not shard_files(manifest, "latents"):
        return OutlierSet(images)
    return OutlierSet(images, load_kind(folder, "latents", manifest).astype(np.float32))


def outlier_grid(folder: str | Path, path: Path, n: int = 64) -> Path:
    """A PNG grid of the first outlier images (what the student is taught to reject)."""
    from PIL import Image

    images = load_outliers(folder).images[:n]
    side = int(np.ceil(np.sqrt(len(images))))
    h, w = images.shape[1:3]
    grid = np.zeros((side * h, side * w, *images.shape[3:]), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, side)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    grid = grid.squeeze(-1) if grid.ndim == 3 and grid.shape[-1] == 1 else grid
    Image.fromarray(grid).resize((side * w * 3, side * h * 3), Image.NEAREST).save(path)
    return path
