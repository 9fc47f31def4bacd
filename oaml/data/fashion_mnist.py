"""Fashion-MNIST from its IDX files (Debian's dataset-fashion-mnist), torchvision as fallback."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into an array of its declared shape (uint8 only)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    zero, dtype_code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: {array.size} values for shape {shape}")
    return array.reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def load_split(split: str, folder: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of the 'train' or 'test' split.

    Reads the IDX files from `folder` (default: Debian's package location); without them, falls
    back to torchvision's download into ~/.cache/oaml/fashion-mnist.
    """
    images_stem, labels_stem = _FILES[split]
    search = folder or DEBIAN_DIR
    images_path, labels_path = _find(search, images_stem), _find(search, labels_stem)
    if images_path and labels_path:
        return read_idx(images_path), read_idx(labels_path).astype(np.int64)
    if folder is not None:
        raise FileNotFoundError(
            f"{folder} lacks the Fashion-MNIST files {images_stem}[.gz] and {labels_stem}[.gz]"
        )
    return _download(split)


def _download(split: str) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import FashionMNIST

    root = Path.home() / ".cache" / "oaml" / "fashion-mnist"
    try:
        dataset = FashionMNIST(str(root), train=split == "train", download=True)
    except Exception as exc:  # network errors come in many types
        raise FileNotFoundError(
            f"Fashion-MNIST is not in {DEBIAN_DIR} and could not be downloaded ({exc}); "
            "install it with `apt-get install dataset-fashion-mnist`"
        ) from exc
    return dataset.data.numpy(), dataset.targets.numpy().astype(np.int64)
