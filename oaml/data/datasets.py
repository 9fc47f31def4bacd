"""ID and OOD datasets of a benchmark, read with a model's preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
