"""The class-conditional generator: its loss by hand, training resumed after a kill equals an
uninterrupted run, the cache, and its outliers (images plus latents) on the real benchmark."""

import json
import math

import numpy as np
import pytest
import torch

from oaml.synthesis.backends import SynthesisRequest, synthesize
from oaml.synthesis.generator import (
    ClassPriorVAE,
    GeneratorConfig,
    cache_folder,
    load_generator,
    train_generator,
)
from oaml.synthesis.outlier_sets import load_outliers

SMALL = GeneratorConfig(latent_dim=4, hidden=16, epochs=3, batch_size=16, lr=1e-3)


def _toy_images(n: int = 64, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % classes
    images = (rng.random((n, 8, 8, 1)) * 60).astype(np.uint8)
    for c in range(classes):  # each class lights its own rows
        images[labels == c, 2 * c : 2 * c + 2] = 230
    return images, labels


def test_loss_terms_match_their_formulas():
    torch.manual_seed(0)
    model = ClassPriorVAE(1, 8, 3, latent_dim=4, hidden=16)
    x = torch.rand(5, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1])
    terms = model.loss(x, y, SMALL, torch.Generator().manual_seed(1))
    mu, logvar = model.encode(x)
    diff = mu - model.class_means[y]
    kl = 0.5 * (logvar.exp() + diff**2 - 1 - logvar).sum(1).mean()
    assert terms["kl"].item() == pytest.approx(kl.item(), rel=1e-5)
    d2 = ((mu[:, None, :] - model.class_means[None]) ** 2).sum(-1)
    ce = -torch.log_softmax(-0.5 * d2, dim=1)[torch.arange(5), y].mean()
    assert terms["ce"].item() == pytest.approx(ce.item(), rel=1e-4)
    total = terms["recon"] + terms["kl"] + terms["ce"]
    assert terms["loss"].item() == pytest.approx(total.item(), rel=1e-6)


def test_a_killed_training_resumes_to_the_uninterrupted_weights(tmp_path):
    images, labels = _toy_images()
    whole = train_generator(images, labels, 3, tmp_path / "whole", SMALL)

    class Killed(Exception):
        pass

    def kill_after_first(epoch, losses):
        if epoch == 0:
            raise Killed

    with pytest.raises(Killed):
        train_generator(images, labels, 3, tmp_path / "resumed", SMALL, on_epoch=kill_after_first)
    folder = cache_folder(tmp_path / "resumed", images, labels, SMALL)
    assert (folder / "last.pt").is_file() and not (folder / "generator.pt").exists()
    seen = []
    resumed = train_generator(
        images, labels, 3, tmp_path / "resumed", SMALL, on_epoch=lambda e, _: seen.append(e)
    )
    assert seen == [1, 2]  # epoch 0 was not trained again
    a, b = load_generator(whole).state_dict(), load_generator(resumed).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    history = json.loads((resumed / "generator.json").read_text())["history"]
    assert len(history) == 3 and history[-1]["loss"] < history[0]["loss"]
    assert not (resumed / "last.pt").exists()


def test_the_cache_is_keyed_by_images_and_settings(tmp_path):
    images, labels = _toy_images()
    first = train_generator(images, labels, 3, tmp_path, SMALL)
    stamp = (first / "generator.pt").stat().st_mtime_ns
    assert train_generator(images, labels, 3, tmp_path, SMALL) == first
    assert (first / "generator.pt").stat().st_mtime_ns == stamp  # found, not retrained
    changed = images.copy()
    changed[0, 0, 0, 0] ^= 1
    assert cache_folder(tmp_path, changed, labels, SMALL) != first
    other = GeneratorConfig(**{**SMALL.__dict__, "epochs": 4})
    assert cache_folder(tmp_path, images, labels, other) != first


def test_the_generator_refuses_odd_sizes():
    with pytest.raises(ValueError, match="divisible by 4"):
        ClassPriorVAE(1, 30, 3, 4, 16)


@pytest.mark.slow
def test_generated_outliers_on_the_real_benchmark(tmp_path, data_root):
    request = SynthesisRequest(
        benchmark="fmnist6", data_root=data_root, out=tmp_path / "out", count=120,
        shard_size=50, generator_epochs=1, cache=tmp_path / "cache", device="cpu",
    )  # fmt: skip
    manifest = json.loads(synthesize("generator", request).read_text())
    assert manifest["kind"] == "generator" and manifest["count"] == 120
    found = load_outliers(tmp_path / "out")
    assert found.images.shape == (120, 28, 28, 1) and found.latents.shape == (120, 16)
    with np.load(tmp_path / "out" / "images_00000.npz") as shard:
        assert shard["sampled_by"].tolist() == ["boundary"] * 25 + ["mix"] * 25
    assert found.images.std() > 10  # decoded images, not a constant
    history = json.loads(next((tmp_path / "cache").glob("*/generator.json")).read_text())
    assert len(history["history"]) == 1 and math.isfinite(history["history"][0]["loss"])
    again = synthesize("generator", request)  # finished: nothing is redone
    np.testing.assert_array_equal(load_outliers(again.parent).images, found.images)


def test_an_unwritable_data_volume_keeps_the_generator_with_the_outliers(tmp_path):
    """A data root whose cache cannot be created (here `cache` is a file; in a container, a
    volume owned by another user) trains the generator into the outlier folder instead."""
    from oaml.io import writable_folder

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cache").write_text("not a folder")
    chosen = writable_folder(tmp_path / "data" / "cache" / "generators", tmp_path / "out" / "gen")
    assert chosen == tmp_path / "out" / "gen" and chosen.is_dir()
    assert writable_folder(tmp_path / "shared", tmp_path / "other") == tmp_path / "shared"
    with pytest.raises(PermissionError, match="check the volumes"):
        writable_folder(tmp_path / "data" / "cache" / "a", tmp_path / "data" / "cache" / "b")
