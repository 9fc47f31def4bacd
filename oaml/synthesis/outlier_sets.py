"""Finished outlier sets as training reads them, whichever backend wrote them: forward-diffused
images, or Stable Diffusion's decoded images with their final latents (DeepCLUB's input)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oaml.synthesis.forward_diffusion import MANIFEST, load_outlier_images


@dataclass(frozen=True)
class OutlierSet:
    images: np.ndarray  # (N, H, W, C) uint8
    latents: np.ndarray | None = None  # (N, ...) float32, Stable Diffusion only


def load_outliers(folder: str | Path) -> OutlierSet:
    """The images (and latents, where the backend wrote them) in manifest order."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if manifest.get("kind") != "stable_diffusion":
        return OutlierSet(load_outlier_images(folder))  # names a missing manifest clearly

    def stacked(kind: str) -> np.ndarray:
        arrays = []
        for name in manifest[kind]:
            with np.load(folder / name) as shard:
                arrays.append(shard[kind])
        return np.concatenate(arrays)

    return OutlierSet(stacked("images"), stacked("latents").astype(np.float32))
