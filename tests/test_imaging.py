"""oaml.imaging: hand-checked luma, channel repeat, resize identity, layout round trip, and that
the module (used by the torch-free serving image) imports without torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from oaml.contract import INTERPOLATIONS
from oaml.imaging import (
    RESAMPLING,
    check_interpolation,
    convert_mode,
    mode_for,
    resize,
    to_channels,
    to_nchw,
    to_nhwc,
)


def test_luma_of_known_pixels_by_hand():
    # PIL: L = (19595 R + 38470 G + 7471 B + 32768) >> 16 (ITU-R 601-2 with integer rounding).
    # (200, 100, 50): 3919000 + 3847000 + 373550 + 32768 = 8172318 -> 8172318 >> 16 = 124.
    # (255, 255, 255) -> 255; pure red 255 -> 76; pure green 255 -> 150; pure blue 255 -> 29.
    pixels = np.array(
        [[[200, 100, 50], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8
    )
    grey = to_channels(pixels, 1)
    assert grey.shape == (1, 5, 1) and grey.dtype == np.uint8
    assert grey[0, :, 0].tolist() == [124, 255, 76, 150, 29]


def test_array_luma_is_pils_convert_for_every_pixel_of_a_batch():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (4, 9, 7, 3), dtype=np.uint8)
    grey = to_channels(batch, 1)
    assert grey.shape == (4, 9, 7, 1)
    for image, got in zip(batch, grey, strict=True):
        expected = np.asarray(Image.fromarray(image).convert("L"))
        np.testing.assert_array_equal(got[..., 0], expected)
    # A PIL image goes through the same conversion.
    image = Image.fromarray(batch[0])
    np.testing.assert_array_equal(np.asarray(to_channels(image, 1)), grey[0, ..., 0])


def test_grey_to_rgb_repeats_the_channel():
    grey = np.array([[[0], [17], [255]]], np.uint8)
    rgb = to_channels(grey, 3)
    assert rgb.shape == (1, 3, 3)
    assert rgb[0].tolist() == [[0, 0, 0], [17, 17, 17], [255, 255, 255]]
    assert np.asarray(to_channels(Image.fromarray(grey[..., 0]), 3)).tolist() == rgb.tolist()
    assert to_channels(rgb, 3) is rgb  # already right: untouched
    with pytest.raises(ValueError, match="2-channel"):
        to_channels(np.zeros((2, 2, 2), np.uint8), 3)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_resize_is_the_identity_at_the_native_size(interpolation):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    assert resize(array, (12, 10), interpolation) is array
    image = Image.fromarray(array[..., 0])
    assert resize(image, (12, 10), interpolation) is image
    square = rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)
    assert resize(square, 8, interpolation) is square


def test_resize_is_pils_resize_elsewhere():
    rng = np.random.default_rng(2)
    array = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    got = resize(array, 16)
    expected = np.asarray(Image.fromarray(array).resize((16, 16), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(got, expected)
    assert got.flags.writeable
    grey = resize(array[..., :1], (20, 24), "bicubic")
    assert grey.shape == (20, 24, 1)
    pil = Image.fromarray(array[..., 0]).resize((24, 20), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(grey[..., 0], np.asarray(pil))


def test_resize_of_a_uniform_image_keeps_its_value():
    # Every filter's weights sum to one: a flat grey stays that grey at any size.
    flat = np.full((9, 9), 77, np.uint8)
    for name in INTERPOLATIONS:
        assert set(np.unique(resize(flat, 4, name)).tolist()) == {77}


def test_interpolation_names_are_the_contracts():
    assert tuple(RESAMPLING) == INTERPOLATIONS
    assert check_interpolation("lanczos") == "lanczos"
    with pytest.raises(ValueError, match="unknown interpolation 'area'"):
        check_interpolation("area")
    assert (mode_for(1), mode_for(3)) == ("L", "RGB")
    with pytest.raises(ValueError, match="1 or 3 channels"):
        mode_for(4)


def test_convert_mode_composites_alpha_on_black_then_takes_luma():
    rgba = Image.fromarray(np.array([[[200, 100, 50, 255], [255, 255, 255, 0]]], np.uint8))
    assert np.asarray(convert_mode(rgba, "L")).tolist() == [[124, 0]]
    assert np.asarray(convert_mode(rgba, "RGB")).tolist() == [[[200, 100, 50], [0, 0, 0]]]


def test_nhwc_nchw_round_trip():
    batch = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)  # N, C, H, W
    nhwc = to_nhwc(batch)
    assert nhwc.shape == (2, 4, 5, 3) and nhwc.flags.c_contiguous
    assert nhwc[1, 2, 3, 0] == batch[1, 0, 2, 3] and nhwc[0, 0, 1, 2] == batch[0, 2, 0, 1]
    back = to_nchw(nhwc)
    np.testing.assert_array_equal(back, batch)
    assert back.flags.c_contiguous and back.flags.writeable
    np.testing.assert_array_equal(to_nchw(to_nhwc(batch[0])), batch[0])  # one CHW image
    with pytest.raises(ValueError, match="3 axes"):
        to_nhwc(np.zeros((4, 4), np.uint8))


def test_in_graph_resize_agrees_with_the_helper_at_the_native_size():
    """The exported graph's torch resize and imaging.resize are both the identity there."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    rng = np.random.default_rng(3)
    batch = rng.integers(0, 256, (2, 11, 11, 3), dtype=np.uint8)
    x = torch.from_numpy(to_nchw(batch)).float()
    graph = F.interpolate(x, size=(11, 11), mode="bilinear", align_corners=False)
    helper = np.stack([resize(image, 11) for image in batch])
    np.testing.assert_array_equal(to_nhwc(graph.round().to(torch.uint8).numpy()), helper)


def test_imports_without_torch():
    code = (
        "import sys, oaml.imaging; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
