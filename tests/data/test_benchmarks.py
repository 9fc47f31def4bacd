"""Benchmark definitions against a small generated OpenOOD tree."""

import numpy as np
import pytest
from PIL import Image

from oaml.data.benchmarks import BENCHMARKS, get_benchmark
from oaml.data.datasets import image_set_dataset, model_spec_for


def _make_tree(root, bench, per_list=4):
    """Write every imglist of `bench` with tiny RGB images under its image folder."""
    rng = np.random.default_rng(0)
    for image_set in bench.imglists():
        lines = []
        for i in range(per_list):
            rel = f"{image_set.name}/img {i}.png"
            path = image_set.image_root(root) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(path)
            label = i % bench.num_classes if image_set.group == "id" else -1
            lines.append(f"{rel} {label}\n")
        listing = image_set.imglist_path(root)
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("".join(lines))


@pytest.mark.parametrize(
    ("name", "near", "far"),
    [
        ("cifar10", {"cifar100", "tin"}, {"mnist", "svhn", "texture", "places365"}),
        ("cifar100", {"cifar10", "tin"}, {"mnist", "svhn", "texture", "places365"}),
        ("imagenet1k", {"ssb_hard", "ninco"}, {"inaturalist", "textures", "openimage_o"}),
    ],
)
def test_openood_near_far_sets(name, near, far):
    bench = get_benchmark(name)
    assert {s.name for s in bench.ood if s.group == "near"} == near
    assert {s.name for s in bench.ood if s.group == "far"} == far


def test_imagenet_textures_live_in_images_classic():
    bench = get_benchmark("imagenet1k")
    dirs = {s.name: s.image_dir for s in bench.ood}
    assert dirs["textures"] == "images_classic" and dirs["ninco"] == "images_largescale"


@pytest.mark.parametrize("name", ["cifar10", "imagenet1k"])
def test_generated_tree_reads_through_the_benchmark(tmp_path, name):
    bench = get_benchmark(name)
    _make_tree(tmp_path, bench)
    bench.require(tmp_path)
    spec = model_spec_for(bench, "resnet18_32x32")
    for image_set in bench.imglists():
        dataset = image_set_dataset(image_set, tmp_path, spec)
        image, _ = dataset[0]
        assert tuple(image.shape) == (3, bench.input_size, bench.input_size)


def test_incomplete_tree_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar10.*test_cifar10\.txt.*OpenOOD"):
        get_benchmark("cifar10").require(tmp_path)
    with pytest.raises(FileNotFoundError, match="oaml data prepare --benchmark fmnist"):
        get_benchmark("fmnist").require(tmp_path)


def test_every_benchmark_is_consistent():
    for name in BENCHMARKS:
        bench = get_benchmark(name)
        assert len(bench.mean) == len(bench.std) == bench.channels
        assert len({s.name for s in bench.ood}) == len(bench.ood)
        assert {s.group for s in bench.ood} <= {"near", "far"}
