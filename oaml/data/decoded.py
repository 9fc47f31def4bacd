"""An imglist decoded once into a memory-mapped uint8 array, so epochs read pixels, not PNGs.

Decoding and resizing every image on every epoch is pure repetition when the images do not
change: the first use writes `(N, C, H, W)` uint8 at the model's size to a cache file (atomically,
with a progress bar) and every later epoch, stage and re-run maps it. The key hashes the listed
files (path, size, mtime), the image mode and the size, so an edited image or list is re-decoded.
Random augmentation (pad-crop, flip) runs on the cached tensors; the base resize is the same PIL
path the uncached dataset takes, so both give identical pixels.
"""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import numpy as np
import torch

from oaml.data.imglist import ImglistDataset, hash_file_stats
from oaml.imaging import DEFAULT_INTERPOLATION
from oaml.io import atomic_path
from oaml.progress import progress

CACHE_VERSION = 1


def cache_key(
    dataset: ImglistDataset, size: int, interpolation: str = DEFAULT_INTERPOLATION
) -> str:
    """Hash of what the decoded pixels depend on: files, their sizes and times, mode, size and
    resize filter (named only when not the default, so existing caches keep their keys)."""
    header = f"v{CACHE_VERSION} {dataset.mode} {size}"
    if interpolation != DEFAULT_INTERPOLATION:
        header += f" {interpolation}"
    digest = hashlib.sha256(f"{header}\n".encode())
    hash_file_stats(digest, dataset.image_root, dataset.entries)
    return digest.hexdigest()[:24]


def _decode_into(dataset: ImglistDataset, array: np.ndarray) -> None:
    for i in progress(range(len(dataset)), desc="decoding images", unit="img"):
        array[i] = dataset[i][0].numpy()


def decode_all(
    dataset: ImglistDataset,
    size: int,
    channels: int,
    cache_dir: Path | None,
    interpolation: str = DEFAULT_INTERPOLATION,
):
    """The dataset's base-transformed images as (N, C, H, W) uint8: mapped from the cache file
    when present, else decoded (into the cache when its folder is writable, else in memory).
    `interpolation` is the one the dataset's transform resizes with (part of the cache key)."""
    shape = (len(dataset), channels, size, size)
    if cache_dir is None:
        array = np.empty(shape, np.uint8)
        _decode_into(dataset, array)
        return array
    path = cache_dir / f"decoded-{cache_key(dataset, size, interpolation)}.npy"
    if not path.is_file():
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
                _decode_into(dataset, array)
                array.flush()
                del array
        except OSError as exc:  # a read-only data volume: decode for this process only
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            return decode_all(dataset, size, channels, None, interpolation)
    array = np.load(path, mmap_mode="r")
    if array.shape != shape or array.dtype != np.uint8:
        raise ValueError(f"decoded-image cache {path} has shape {array.shape}; delete it")
    return array


class DecodedImages:
    """A map-style dataset over decoded pixels: `(augment(image) uint8 CHW, label)`."""

    def __init__(self, source: ImglistDataset, pixels: np.ndarray, augment=None) -> None:
        if len(pixels) != len(source):
            raise ValueError(f"{len(pixels)} decoded images for {len(source)} entries")
        self.source, self.pixels, self.augment = source, pixels, augment
        self.entries, self.imglist = source.entries, source.imglist
        self._labels = torch.tensor([e.label for e in source.entries], dtype=torch.long)

    @property
    def labels(self) -> list[int]:
        return self._labels.tolist()

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(np.array(self.pixels[index]))
        if self.augment is not None:
            image = self.augment(image)
        return image, int(self._labels[index])
