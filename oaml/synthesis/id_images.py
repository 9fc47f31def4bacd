"""The ID training images an outlier backend starts from: a seeded, class-stratified subset,
decoded to uint8 (N, H, W, C) with its labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oaml.data.benchmarks import get_benchmark
from oaml.data.datasets import stratified_subset
from oaml.data.imglist import ImglistEntry, load_image, parse_imglist
from oaml.io import sha256_file
from oaml.progress import progress


@dataclass(frozen=True)
class TrainingImages:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64
    entries: list[ImglistEntry]
    imglist_sha256: str  # what the images were listed by (a cache key's input)


def training_entries(benchmark: str, data_root: str | Path, count: int, seed: int):
    """(entries, image root, imglist sha256) of `count` stratified ID training images."""
    root = Path(data_root).expanduser().resolve()
    bench = get_benchmark(benchmark, root)
    bench.require(root, [bench.train])
    listed = bench.train.imglist_path(root)
    entries = stratified_subset(parse_imglist(listed), count, seed)
    return entries, bench.train.image_root(root), sha256_file(listed)


def as_hwc(array: np.ndarray) -> np.ndarray:
    """A grayscale (H, W) image as (H, W, 1); colour images unchanged."""
    return array[:, :, None] if array.ndim == 2 else array


def load_training_images(
    benchmark: str, data_root: str | Path, count: int, seed: int = 0
) -> TrainingImages:
    """`count` stratified ID training images (all where count exceeds them), decoded."""
    entries, image_root, digest = training_entries(benchmark, data_root, count, seed)
    mode = get_benchmark(benchmark, data_root).image_mode
    images = np.stack(
        [
            as_hwc(np.asarray(load_image(image_root / e.path, mode)))
            for e in progress(entries, desc="reading ID images", unit="img")
        ]
    )
    labels = np.array([e.label for e in entries], dtype=np.int64)
    return TrainingImages(images, labels, entries, digest)
