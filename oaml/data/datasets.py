"""ID and OOD datasets of a benchmark, read with a model's preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from oaml.data.benchmarks import BenchmarkSpec, ImageSet
from oaml.data.decoded import DecodedImages, decode_all
from oaml.data.imglist import ImglistDataset, ImglistEntry, parse_imglist
from oaml.data.transforms import build_transform, image_mode, tensor_augment
from oaml.imaging import DEFAULT_INTERPOLATION, resize, to_channels, to_nchw
from oaml.models.factory import ModelSpec

# Larger sets (ImageNet at 224 px) keep decoding per epoch with loader workers.
MAX_DECODED_BYTES = 4 << 30


def stratified_subset(entries: list[ImglistEntry], size: int, seed: int) -> list[ImglistEntry]:
    """A seeded, class-stratified subset of `size` entries (all of them if size >= len)."""
    if size >= len(entries):
        return entries
    from sklearn.model_selection import train_test_split

    labels = np.array([e.label for e in entries])
    if np.unique(labels, return_counts=True)[1].min() < 2:
        # scikit-learn refuses a class of one image (a user's data has them): the group-aware
        # splitter, with every image its own group, keeps the shares without that limit.
        from oaml.data.splits import assign_splits

        share = size / len(entries)
        chosen = assign_splits(
            labels - labels.min(), range(len(entries)), {"keep": share, "rest": 1 - share}, seed
        )
        return [e for e, c in zip(entries, chosen, strict=True) if c == "keep"]
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
    decoded: bool = False,
) -> ImglistDataset | DecodedImages:
    """Dataset over one imglist of a benchmark under `root`. `decoded`: decode every image once
    into a memory-mapped cache under `root/cache/` (for sets read every epoch or evaluation)."""
    entries = parse_imglist(image_set.imglist_path(root))
    if subset is not None:
        entries = stratified_subset(entries, subset, seed)
    cache_bytes = len(entries) * spec.in_chans * spec.input_size**2
    cacheable = (
        decoded and entries and "resized_crop" not in augment and cache_bytes <= MAX_DECODED_BYTES
    )
    dataset = ImglistDataset(
        image_set.imglist_path(root),
        image_set.image_root(root),
        transform=build_transform(spec, () if cacheable else augment),
        mode=image_mode(spec),
        entries=entries,
    )
    if not cacheable:
        return dataset
    cache_dir = Path(root) / "cache" / "decoded"
    pixels = decode_all(dataset, spec.input_size, spec.in_chans, cache_dir, spec.interpolation)
    return DecodedImages(dataset, pixels, tensor_augment(spec, augment))


def external_dataset(imglist: Path, spec: ModelSpec) -> ImglistDataset:
    """An extra OOD imglist given by the user: paths are relative to the imglist's folder."""
    imglist = Path(imglist)
    return ImglistDataset(
        imglist, imglist.parent, transform=build_transform(spec), mode=image_mode(spec)
    )


class WithRows:
    """Adds per-sample rows of frozen arrays (e.g. cached teacher outputs, memory-mapped) to each
    item as a dict of tensors: a loader worker reads only the rows of its batch."""

    def __init__(self, dataset, arrays: dict[str, np.ndarray]) -> None:
        for name, array in arrays.items():
            if len(array) != len(dataset):
                raise ValueError(f"{len(array)} rows of {name} for {len(dataset)} samples")
        self.dataset, self.arrays = dataset, arrays

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        rows = {k: torch.from_numpy(np.array(a[index], np.float32)) for k, a in self.arrays.items()}
        return image, label, rows


class OutlierImages:
    """Synthesized outlier images (N, H, W, C) uint8, served as CHW tensors at the model's size
    and channels, each with its diffusion latent where the backend kept one (else empty).

    Channels and size go through oaml.imaging (PIL's luma, PIL's resize at the model's recorded
    interpolation), the same functions training images go through.
    """

    def __init__(self, images: np.ndarray, spec: ModelSpec, latents: np.ndarray | None = None):
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"outlier images have shape {images.shape}; expected (N, H, W, 1|3)")
        if latents is not None and len(latents) != len(images):
            raise ValueError(f"{len(latents)} outlier latents for {len(images)} images")
        # NHWC, kept as given (a memory map stays one): channels are converted per image.
        self.images, self.channels = images, spec.in_chans
        self.latents = latents
        self.size, self.interpolation = spec.input_size, spec.interpolation

    @property
    def latent_dim(self) -> int | None:
        return None if self.latents is None else int(np.prod(self.latents.shape[1:]))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = to_channels(np.asarray(self.images[index]), self.channels)
        image = resize(pixels, self.size, self.interpolation)
        if self.latents is None:
            return torch.from_numpy(np.ascontiguousarray(to_nchw(image))), torch.empty(0)
        latent = torch.from_numpy(np.array(self.latents[index], dtype=np.float32))
        return torch.from_numpy(np.ascontiguousarray(to_nchw(image))), latent


def model_spec_for(
    bench: BenchmarkSpec,
    arch: str,
    width: float = 1.0,
    kwargs: dict | None = None,
    input_size: int | None = None,
    interpolation: str = DEFAULT_INTERPOLATION,
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
        interpolation=interpolation,
    )
