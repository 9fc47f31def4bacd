"""ID and OOD datasets of a benchmark, read with a model's preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.functional import resize

from oaml.data.benchmarks import BenchmarkSpec, ImageSet
from oaml.data.imglist import ImglistDataset, ImglistEntry, parse_imglist
from oaml.data.transforms import build_transform, image_mode
from oaml.models.factory import ModelSpec


def stratified_subset(entries: list[ImglistEntry], size: int, seed: int) -> list[ImglistEntry]:
    """A seeded, class-stratified subset of `size` entries (all of them if size >= len)."""
    if size >= len(entries):
        return entries
    from sklearn.model_selection import train_test_split

    labels = np.array([e.label for e in entries])
    keep, _ = train_test_split(
        np.arange(len(entries)), train_size=size, stratify=labels, random_state=seed
    )
    return [entries[i] for i in np.sort(keep)]


def image_set_dataset(
    image_set: ImageSet,
    root: Path,
    spec: ModelSpec,
    augment: tuple[str, ...] = (),
    subset: int | None = None,
    seed: int = 0,
) -> ImglistDataset:
    """Dataset over one imglist of a benchmark under `root`."""
    entries = parse_imglist(image_set.imglist_path(root))
    if subset is not None:
        entries = stratified_subset(entries, subset, seed)
    return ImglistDataset(
        image_set.imglist_path(root),
        image_set.image_root(root),
        transform=build_transform(spec, augment),
        mode=image_mode(spec),
        entries=entries,
    )


def external_dataset(imglist: Path, spec: ModelSpec) -> ImglistDataset:
    """An extra OOD imglist given by the user: paths are relative to the imglist's folder."""
    imglist = Path(imglist)
    return ImglistDataset(
        imglist, imglist.parent, transform=build_transform(spec), mode=image_mode(spec)
    )


class WithIndex:
    """Adds a per-sample index (e.g. a row of cached teacher outputs) to each item."""

    def __init__(self, dataset, rows: np.ndarray) -> None:
        if len(rows) != len(dataset):
            raise ValueError(f"{len(rows)} rows for {len(dataset)} samples")
        self.dataset, self.rows = dataset, torch.as_tensor(rows, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return image, label, self.rows[index]


class OutlierImages:
    """Synthesized outlier images (N, H, W, C) uint8, served as CHW tensors at the model's size."""

    def __init__(self, images: np.ndarray, spec: ModelSpec) -> None:
        if images.ndim != 4 or images.shape[-1] != spec.in_chans:
            raise ValueError(
                f"outlier images have shape {images.shape}; the model takes {spec.in_chans}-"
                "channel images: synthesize them from the same benchmark"
            )
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.size = spec.input_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if image.shape[-2:] != (self.size, self.size):
            image = resize(image, [self.size, self.size], antialias=True)
        return image, -1


def model_spec_for(
    bench: BenchmarkSpec,
    arch: str,
    width: float = 1.0,
    kwargs: dict | None = None,
    input_size: int | None = None,
) -> ModelSpec:
    """A ModelSpec whose classes, channels and normalisation come from the benchmark."""
    return ModelSpec(
        arch=arch,
        num_classes=bench.num_classes,
        in_chans=bench.channels,
        width=width,
        kwargs=dict(kwargs or {}),
        input_size=input_size or bench.input_size,
        mean=bench.mean,
        std=bench.std,
        class_names=bench.class_names,
    )
