"""Outlier images and the decoded cache go through oaml.imaging like every training image."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from oaml.data.datasets import OutlierImages
from oaml.data.decoded import cache_key
from oaml.data.imglist import ImglistDataset, ImglistEntry
from oaml.models.factory import ModelSpec


def test_outliers_get_pils_luma_and_pils_resize():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    spec = ModelSpec("resnet18_32x32", 10, in_chans=1, input_size=28, interpolation="bicubic")
    outliers = OutlierImages(images, spec)
    image, latent = outliers[1]
    assert image.shape == (1, 28, 28) and latent.numel() == 0
    expected = Image.fromarray(images[1]).convert("L").resize((28, 28), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(image[0].numpy(), np.asarray(expected))


def test_outliers_at_the_native_size_are_unchanged():
    images = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 1), dtype=np.uint8)
    spec = ModelSpec("resnet18_32x32", 10, in_chans=3, input_size=16)
    image, _ = OutlierImages(images, spec)[2]
    assert image.shape == (3, 16, 16)
    np.testing.assert_array_equal(image.numpy(), np.repeat(images[2].transpose(2, 0, 1), 3, 0))


def test_decoded_cache_key_names_only_a_non_default_interpolation(tmp_path):
    Image.new("L", (4, 4)).save(tmp_path / "a.png")
    dataset = ImglistDataset(tmp_path / "x.txt", tmp_path, entries=[ImglistEntry("a.png", 0)])
    default = cache_key(dataset, 28)
    assert cache_key(dataset, 28, "bilinear") == default  # existing caches keep their key
    assert cache_key(dataset, 28, "bicubic") != default


def test_decoded_cache_gives_the_files_pixels_and_is_reused(data_root):
    """Training reads the cache instead of the PNGs: same pixels and labels, one file, mapped
    again (not rewritten) by the next stage."""
    from oaml.data.benchmarks import get_benchmark
    from oaml.data.datasets import image_set_dataset, model_spec_for

    bench = get_benchmark("fmnist")
    spec = model_spec_for(bench, "resnet18_32x32", 0.25)
    plain = image_set_dataset(bench.val, data_root, spec, subset=300)
    cached = image_set_dataset(bench.val, data_root, spec, subset=300, decoded=True)
    for i in range(0, 300, 7):
        assert torch.equal(cached[i][0], plain[i][0]) and cached[i][1] == plain[i][1]
    file = data_root / "cache" / "decoded" / f"decoded-{cache_key(plain, spec.input_size)}.npy"
    stamp = file.stat().st_mtime_ns
    again = image_set_dataset(bench.val, data_root, spec, subset=300, decoded=True)
    assert torch.equal(again[5][0], plain[5][0]) and file.stat().st_mtime_ns == stamp
