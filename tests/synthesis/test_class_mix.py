"""Between-class mixes: hand-checked mixup and cutmix, partners of another class, real shards."""

import json

import numpy as np
import pytest

from oaml.synthesis.class_mix import (
    ClassMixConfig,
    cutmix,
    mixup,
    other_class_partners,
    synthesize,
)
from oaml.synthesis.outlier_sets import load_outliers


def test_mixup_blends_by_lambda():
    first = np.full((1, 2, 2, 1), 200, np.uint8)
    second = np.full((1, 2, 2, 1), 100, np.uint8)
    assert mixup(first, second, np.array([0.25], np.float32)).ravel().tolist() == [125] * 4


def test_cutmix_pastes_a_box_of_the_asked_area():
    first = np.zeros((3, 10, 10, 1), np.uint8)
    second = np.full((3, 10, 10, 1), 255, np.uint8)
    mixed = cutmix(first, second, np.array([0.25, 0.5, 0.64]), np.random.default_rng(0))
    # 5x5, 7x7 (the whole-pixel box nearest to 50) and 8x8 pixels
    assert [int((m == 255).sum()) for m in mixed] == [25, 49, 64]
    assert first.max() == 0  # the inputs are left alone


def test_partners_are_always_of_another_class():
    labels = np.array([0] * 90 + [1] * 5 + [2] * 5)
    indices = np.arange(len(labels))
    partners = other_class_partners(labels, indices, np.random.default_rng(3))
    assert (labels[partners] != labels[indices]).all()


def test_bad_lambdas_are_named(tmp_path):
    with pytest.raises(ValueError, match="lam_min <= lam_max"):
        synthesize("fmnist", tmp_path, tmp_path, ClassMixConfig(lam_min=0.8, lam_max=0.2))


@pytest.mark.slow
def test_mixes_of_the_real_benchmark_are_deterministic_and_resume(tmp_path, data_root):
    cfg = ClassMixConfig(count=300, shard_size=100, seed=2)
    manifest = json.loads(synthesize("fmnist6", data_root, tmp_path / "a", cfg).read_text())
    assert manifest["kind"] == "class_mix" and manifest["count"] == 300
    images = load_outliers(tmp_path / "a").images
    assert images.shape == (300, 28, 28, 1) and images.dtype == np.uint8
    with np.load(tmp_path / "a" / "images_00001.npz") as shard:
        assert (shard["sources"] != shard["partners"]).all()
        assert shard["lam"].min() >= 0.35 and shard["lam"].max() <= 0.65
    (tmp_path / "a" / "images_00001.npz").unlink()
    (tmp_path / "a" / "manifest.json").unlink()
    synthesize("fmnist6", data_root, tmp_path / "a", cfg)  # resumes: only shard 1 again
    again = load_outliers(tmp_path / "a").images
    np.testing.assert_array_equal(images, again)


def test_a_combined_source_names_an_unknown_part():
    from oaml.synthesis.backends import check_backend

    assert check_backend("generator+class-mix") == ["generator", "class-mix"]
    with pytest.raises(KeyError, match="forward-diffusion"):
        check_backend("class-mix+nonsense")
    with pytest.raises(ValueError, match="twice"):
        check_backend("class-mix+class-mix")


@pytest.mark.slow
def test_a_combined_source_lists_both_parts_images(tmp_path, data_root):
    from oaml.synthesis.backends import SynthesisRequest
    from oaml.synthesis.backends import synthesize as run
    from oaml.synthesis.outlier_sets import mapped_outliers

    request = SynthesisRequest("fmnist6", data_root, tmp_path / "both", count=101, shard_size=40)
    manifest = json.loads(run("forward-diffusion+class-mix", request).read_text())
    assert manifest["kind"] == "combined" and manifest["count"] == 101
    assert manifest["images"][0] == "forward-diffusion/images_00000.npz"
    assert manifest["images"][-1] == "class-mix/images_00001.npz"  # 50 mixes: 40 + 10
    found = mapped_outliers(tmp_path / "both")
    assert found.images.shape == (101, 28, 28, 1) and found.latents is None
    alone = load_outliers(tmp_path / "both" / "class-mix").images
    np.testing.assert_array_equal(found.images[51:], alone)
