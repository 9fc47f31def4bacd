"""Image transforms built from a ModelSpec, so training and evaluation preprocess identically."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

from oaml.models.factory import ModelSpec

AUGMENTATIONS = ("crop", "flip", "resized_crop")


def image_mode(spec: ModelSpec) -> str:
    """PIL mode matching the model's input channels."""
    return "L" if spec.in_chans == 1 else "RGB"


class ResizeIfNeeded(T.Resize):
    """Resize only images whose size differs (most benchmark images already match)."""

    def forward(self, img):
        if getattr(img, "size", None) == (self.size[1], self.size[0]):
            return img
        return super().forward(img)


def build_transform(spec: ModelSpec, augment: Sequence[str] = ()) -> T.Compose:
    """Resize to the model's input size, optional augmentation, then a uint8 CHW tensor.

    Normalisation happens inside the model (OamlNet.normalize), on whole batches.
    `crop` is pad-and-crop (padding = size / 8, as CIFAR recipes use), `flip` a horizontal flip,
    `resized_crop` ImageNet's random-resized crop.
    """
    unknown = sorted(set(augment) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; known: {list(AUGMENTATIONS)}")
    size = spec.input_size
    steps: list = []
    if "resized_crop" in augment:
        steps.append(T.RandomResizedCrop(size, antialias=True))
    else:
        steps.append(ResizeIfNeeded((size, size), antialias=True))
        if "crop" in augment:
            steps.append(T.RandomCrop(size, padding=max(1, size // 8)))
    if "flip" in augment:
        steps.append(T.RandomHorizontalFlip())
    steps.append(T.PILToTensor())
    return T.Compose(steps)


def tensor_augment(spec: ModelSpec, augment: Sequence[str]) -> T.Compose | None:
    """The random part of `build_transform` on uint8 CHW tensors at the model's size (for
    decoded-image caches), or None without augmentation. resized_crop needs the full-size
    original and so cannot run on a cache."""
    if "resized_crop" in augment:
        raise ValueError("resized_crop works on the original images: train without the cache")
    steps: list = []
    if "crop" in augment:
        steps.append(T.RandomCrop(spec.input_size, padding=max(1, spec.input_size // 8)))
    if "flip" in augment:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps) if steps else None
