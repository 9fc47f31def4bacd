"""Finished outlier sets as training reads them, whichever backend wrote them: forward-diffused
images, or Stable Diffusion's decoded images with their final latents (DeepCLUB's input).

Training maps them (`mapped_outliers`): the shards are joined once into one .npy per kind beside
them, read memory-mapped, so the ranks of a data-parallel run on a node share one copy in the
page cache instead of each holding all outliers in its own memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oaml.io import atomic_path
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


def _mapped(folder: Path, kind: str, manifest: dict, dtype) -> np.ndarray:
    """`kind`'s shards joined into `.mapped-<kind>-<shards digest>.npy`, memory-mapped."""
    digest = str(manifest.get("shards_sha256", "unversioned"))[:16]
    target = folder / f".mapped-{kind}-{digest}.npy"
    if not target.is_file():
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:  # a path would gain ".npy"
            np.save(fh, load_kind(folder, kind, manifest).astype(dtype, copy=False))
    return np.load(target, mmap_mode="r")


def mapped_outliers(folder: str | Path) -> OutlierSet:
    """load_outliers, memory-mapped (joined once beside the shards); in memory where the folder
    is read-only."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    try:
        images = _mapped(folder, "images", manifest, np.uint8)
        latents = None
        if shard_files(manifest, "latents"):
            latents = _mapped(folder, "latents", manifest, np.float32)
    except PermissionError:
        return load_outliers(folder)
    except OSError as exc:
        if exc.errno != 30:  # EROFS: a read-only volume
            raise
        return load_outliers(folder)
    return OutlierSet(images, latents)


def outlier_grid(folder: str | Path, path: Path, n: int = 64) -> Path:
    """A PNG grid of `n` outlier images spread evenly over the set, so every part of a
    combined source shows (what the student is taught to reject); written atomically."""
    from PIL import Image

    every = load_outliers(folder).images
    images = every[np.unique(np.linspace(0, len(every) - 1, min(n, len(every))).astype(int))]
    side = int(np.ceil(np.sqrt(len(images))))
    h, w = images.shape[1:3]
    grid = np.zeros((side * h, side * w, *images.shape[3:]), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, side)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    grid = grid.squeeze(-1) if grid.ndim == 3 and grid.shape[-1] == 1 else grid
    with atomic_path(path) as tmp:
        Image.fromarray(grid).resize((side * w * 3, side * h * 3), Image.NEAREST).save(tmp, "PNG")
    return path
