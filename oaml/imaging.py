"""Pixels between files and models: resize, grey/RGB conversion and NHWC/NCHW layout, once each.

Training's transforms, the outlier dataset, evaluation, export and the server's image endpoint all
call these, so an image gets the same pixels on every path. Imports numpy and PIL only: the
serving image has no torch.

- `resize` is PIL's (antialiased when shrinking), with the interpolation a ModelSpec records
  (default bilinear, what torchvision's Resize does on PIL images); at the native size it returns
  the image unchanged. The exported graph resizes in-graph with a torch op instead
  (oaml.export.graph.DetectorGraph: bilinear, no antialiasing); the two agree exactly at the
  native size, where both are the identity, and differ elsewhere, so a client resizes with this
  function before sending (the image endpoint does).
- `to_channels` is PIL's convert("L") luma (ITU-R 601-2, Pillow's integer rounding) for RGB ->
  grey, and channel repetition for grey -> RGB, on PIL images and on uint8 arrays alike.
- `to_nhwc` / `to_nchw` move the channel axis of uint8 images or batches (contiguous copies).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from PIL import Image

from oaml.contract import DEFAULT_INTERPOLATION, INTERPOLATIONS

__all__ = [
    "DEFAULT_INTERPOLATION",
    "INTERPOLATIONS",
    "check_interpolation",
    "convert_mode",
    "mode_for",
    "resize",
    "to_channels",
    "to_nchw",
    "to_nhwc",
]

Pixels = TypeVar("Pixels", Image.Image, np.ndarray)

# The recorded interpolation names (oaml.contract.INTERPOLATIONS) as PIL resampling filters.
RESAMPLING: dict[str, Image.Resampling] = {
    name: Image.Resampling[name.upper()] for name in INTERPOLATIONS
}
MODES = {1: "L", 3: "RGB"}
_HIGH_BIT_DEPTH = {"I", "I;16", "I;16B", "I;16L", "F"}


def check_interpolation(name: str) -> str:
    """`name` if it is a known interpolation, else a ValueError listing the known ones."""
    if name not in RESAMPLING:
        raise ValueError(f"unknown interpolation {name!r}; known: {list(INTERPOLATIONS)}")
    return name


def mode_for(channels: int) -> str:
    """The PIL mode of a model input with `channels` channels: 'L' (1) or 'RGB' (3)."""
    if channels not in MODES:
        raise ValueError(f"images have 1 or 3 channels, not {channels}")
    return MODES[channels]


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int | np.integer) else tuple(map(int, size))


def resize(
    image: Pixels, size: int | tuple[int, int], interpolation: str = DEFAULT_INTERPOLATION
) -> Pixels:
    """A PIL image or uint8 HW/HWC array at `size` (int or (height, width)), PIL-resampled;
    returned as is when it already has that size (so the native size is exact)."""
    height, width = _size_hw(size)
    resample = RESAMPLING[check_interpolation(interpolation)]
    if isinstance(image, Image.Image):
        if image.size == (width, height):
            return image
        return image.resize((width, height), resample)
    array = np.asarray(image)
    if array.shape[:2] == (height, width):
        return image
    if array.ndim == 3 and array.shape[2] == 1:
        return resize(array[:, :, 0], size, interpolation)[:, :, None]
    resized = Image.fromarray(np.ascontiguousarray(array)).resize((width, height), resample)
    return np.array(resized)  # writable, unlike np.asarray of a PIL image


def to_channels(image: Pixels, channels: int) -> Pixels:
    """A PIL image converted to mode 'L'/'RGB', or uint8 (..., C) pixels to (..., channels):
    RGB -> grey by PIL's own convert("L") luma, grey -> RGB by repeating the channel."""
    mode = mode_for(channels)
    if isinstance(image, Image.Image):
        return image.convert(mode)
    array = np.asarray(image)
    have = array.shape[-1] if array.ndim else 0
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return np.repeat(array, 3, axis=-1)
    if have == 3 and channels == 1:
        # PIL defines the luma: run it on the pixels laid out as one (rows, width) RGB image.
        width = array.shape[-2] if array.ndim >= 3 else 1
        rows = np.ascontiguousarray(array, dtype=np.uint8).reshape(-1, width, 3)
        grey = np.array(Image.fromarray(rows, mode="RGB").convert("L"))
        return grey.reshape(*array.shape[:-1], 1)
    raise ValueError(f"cannot turn {have}-channel pixels into {channels}-channel pixels")


def convert_mode(img: Image.Image, mode: str) -> Image.Image:
    """Any PIL mode to 8-bit `mode` ('L' or 'RGB'): high-bit-depth images rescaled by their range
    (PIL would clip them), transparency composited on black (the benchmarks' background)."""
    if img.mode in _HIGH_BIT_DEPTH:
        array = np.asarray(img, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        img = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if img.mode in {"P", "LA", "PA", "RGBA"} or "transparency" in img.info:
        img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), img)
    channels = {m: c for c, m in MODES.items()}.get(mode)
    if channels is None:
        raise ValueError(f"images are converted to 'L' or 'RGB', not {mode!r}")
    return to_channels(img, channels)


def _channel_axis_moved(pixels: np.ndarray, source: int, target: int) -> np.ndarray:
    array = np.asarray(pixels)
    if array.ndim not in (3, 4):
        raise ValueError(f"expected an image (3 axes) or a batch (4 axes), got shape {array.shape}")
    return np.moveaxis(array, source, target).copy()  # C-contiguous, writable, not a view


def to_nhwc(pixels: np.ndarray) -> np.ndarray:
    """NCHW batch (or CHW image) -> contiguous NHWC (HWC): the exported graph's input layout."""
    return _channel_axis_moved(pixels, -3, -1)


def to_nchw(pixels: np.ndarray) -> np.ndarray:
    """NHWC batch (or HWC image) -> contiguous NCHW (CHW): the layout torch models take."""
    return _channel_axis_moved(pixels, -1, -3)
