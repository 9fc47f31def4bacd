"""Image transforms built from a ModelSpec, so training and evaluation preprocess identically."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image
from torchvision import transforms as T

from oaml.imaging import DEFAULT_INTERPOLATION, check_interpolation, mode_for, resize
from oaml.models.factory import ModelSpec

AUGMENTATIONS = ("crop", "flip", "resized_crop")


def image_mode(spec: ModelSpec) -> str:
    """PIL mode matching the model's input channels."""
    return mode_for(spec.in_chans)


class Resize:
    """PIL image -> size x size by oaml.imaging.resize, the resize evaluation and serving use
    (images already at that size, most benchmark images, pass unchanged)."""

    def __init__(self, size: int, interpolation: str = DEFAULT_INTERPOLATION) -> None:
        self.size, self.interpolation = int(size), check_interpolation(interpolation)

    def __call__(self, img: Image.Image) -> Image.Image:
        return resize(img, self.size, self.interpolation)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, interpolation={self.interpolation!r})"


class RandomResizedCrop:
    """ImageNet's random-resized crop: torchvision's crop box, then oaml.imaging.resize (the
    same pixels torchvision's RandomResizedCrop gives on PIL images at the same filter)."""

    def __init__(
        self,
        size: int,
        interpolation: str = DEFAULT_INTERPOLATION,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    ) -> None:
        self.size, self.interpolation = int(size), check_interpolation(interpolation)
        self.scale, self.ratio = scale, ratio

    def __call__(self, img: Image.Image) -> Image.Image:
        top, left, height, width = T.RandomResizedCrop.get_params(img, self.scale, self.ratio)
        crop = img.crop((left, top, left + width, top + height))
        return resize(crop, self.size, self.interpolation)

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, interpolation={self.interpolation!r})"


def build_transform(spec: ModelSpec, augment: Sequence[str] = ()) -> T.Compose:
    """Resize to the model's input size (with its recorded interpolation), optional
    augmentation, then a uint8 CHW tensor.

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
        steps.append(RandomResizedCrop(size, spec.interpolation))
    else:
        steps.append(Resize(size, spec.interpolation))
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
