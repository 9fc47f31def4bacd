"""Stable Diffusion outliers on a tiny random-weight checkpoint: the real code path, offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from oaml.synthesis import stable_diffusion as sd
from oaml.synthesis.tiny_sd import build_tiny_sd
from tests.conftest import oaml_in_process, run_oaml

TINY = sd.GenerationConfig(n_per_class=3, steps=2, size=16, batch_size=2, shard_size=4)
CLASSES = ["T-shirt/top", "Ankle boot"]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


def load(folder, kind: str, key: str | None = None) -> np.ndarray:
    """One array across the shards of `kind` (latents or images): that array, or `key`."""
    manifest = json.loads((folder / "manifest.json").read_text())
    return np.concatenate([np.load(folder / name)[key or kind] for name in manifest[kind]])


def test_cli_writes_latents_and_images_with_a_manifest(tiny_sd, tmp_path, data_root):
    out = tmp_path / "sd"
    run_oaml(
        "synthesize", "--backend", "stable-diffusion", "--checkpoint", str(tiny_sd),
        "--benchmark", "fmnist", "--data-root", str(data_root), "--out", str(out),
        "--n-per-class", "1", "--steps", "2", "--size", "16", "--device", "cpu",
    )  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 10 and len(manifest["class_names"]) == 10
    assert all((out / f).is_file() for f in manifest["latents"] + manifest["images"])
    latents, images = load(out, "latents"), load(out, "images")
    assert latents.shape == (10, 4, 8, 8) and latents.dtype == np.float32
    assert images.shape == (10, 16, 16, 3) and images.dtype == np.uint8
    assert load(out, "latents", "labels").tolist() == list(range(10))
    assert load(out, "images", "labels").tolist() == list(range(10))
    assert manifest["params"]["seed"] == 42 and manifest["embeddings"] == "token_noise"


def test_same_seed_same_outliers_other_seed_others(tiny_sd, tmp_path):
    first = sd.synthesize_sd(tiny_sd, CLASSES, tmp_path / "a", TINY, "cpu").parent
    again = sd.synthesize_sd(tiny_sd, CLASSES, tmp_path / "b", TINY, "cpu").parent
    other = sd.GenerationConfig(**{**TINY.__dict__, "seed": 7})
    moved = sd.synthesize_sd(tiny_sd, CLASSES, tmp_path / "c", other, "cpu").parent
    assert np.array_equal(load(first, "latents"), load(again, "latents"))
    assert np.array_equal(load(first, "images"), load(again, "images"))
    assert not np.allclose(load(first, "latents"), load(moved, "latents"))


def test_replacing_the_class_token_changes_the_conditioning(tiny_sd):
    pipe = sd.load_pipeline(tiny_sd, torch.device("cpu"))
    prompt = "A high-quality image of the Ankle boot"
    position = sd.class_token_position(
        pipe.tokenizer, "A high-quality image of the {}", "Ankle boot"
    )
    ids = pipe.tokenizer(prompt).input_ids
    assert pipe.tokenizer.decode([ids[position]]).strip() == "t"  # the name's last token
    anchor = sd.token_embedding(pipe, position, prompt)
    plain = sd.encode_prompts(pipe, [prompt])
    same = sd.encode_outlier_prompts(pipe, prompt, position, anchor[None])
    assert torch.allclose(plain, same, atol=1e-6)  # replacing by itself changes nothing
    moved = sd.encode_outlier_prompts(pipe, prompt, position, torch.randn(1, anchor.numel()))
    changed = (moved - plain).abs().amax(dim=-1)[0]
    # A causal text encoder: tokens before the replaced one keep their states, the rest change.
    assert changed[:position].max() < 1e-6 and changed[position:].min() > 1e-4
    # The hook is gone afterwards.
    assert torch.allclose(sd.encode_prompts(pipe, [prompt]), plain)


def test_a_killed_run_resumes_at_the_missing_shard(tiny_sd, tmp_path):
    out = tmp_path / "sd"
    sd.synthesize_sd(tiny_sd, CLASSES, out, TINY, "cpu")
    latents = load(out, "latents")
    first = (out / "latents_00000.npz").stat().st_mtime_ns
    # As if killed while writing the second shard: it and the manifest are missing.
    (out / "latents_00001.npz").unlink()
    (out / "images_00001.npz").unlink()
    (out / "manifest.json").unlink()
    sd.synthesize_sd(tiny_sd, CLASSES, out, TINY, "cpu")
    assert (out / "latents_00000.npz").stat().st_mtime_ns == first
    assert np.array_equal(load(out, "latents"), latents)


def test_missing_or_unusable_checkpoint_is_one_line_naming_the_path(tmp_path, data_root):
    missing = tmp_path / "no-such-sd"
    args = ["synthesize", "--backend", "stable-diffusion", "--data-root", str(data_root),
            "--out", str(tmp_path / "out")]  # fmt: skip
    result = oaml_in_process(*args, "--checkpoint", str(missing))
    assert result.returncode == 2 and str(missing) in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    result = oaml_in_process(*args, "--checkpoint", str(empty))
    assert result.returncode == 2 and "no model_index.json" in result.stderr
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    result = oaml_in_process(*args, "--checkpoint", str(broken))
    assert result.returncode == 2 and f"cannot load Stable Diffusion from {broken}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_oaml_trains_on_stable_diffusion_latents_and_images(tiny_sd, tmp_path, data_root):
    """The text-conditioned space picks the outlier embeddings from the teacher's features; the
    OAML method consumes both outputs: DeepCLUB the latents, the energy term and the student's
    outlier batch the decoded images (RGB turned grayscale for Fashion-MNIST)."""
    from oaml.models.checkpoint import read_checkpoint
    from tests.conftest import TINY

    teacher = tmp_path / "teacher"
    run_oaml(
        "train", "--method", "teacher", "--out", str(teacher), "--data-root", str(data_root),
        "--set", "teacher.train.train_subset=300", "--set", "teacher.train.epochs=1",
        "--set", "teacher.model.width=0.125",
    )  # fmt: skip
    outliers = tmp_path / "sd"
    run_oaml(
        "synthesize", "--backend", "stable-diffusion", "--checkpoint", str(tiny_sd),
        "--data-root", str(data_root), "--out", str(outliers), "--n-per-class", "5",
        "--steps", "2", "--size", "16", "--device", "cpu",
        "--teacher", str(teacher / "checkpoint.pt"),
    )  # fmt: skip
    manifest = json.loads((outliers / "manifest.json").read_text())
    assert manifest["embeddings"] == "text_space"
    assert manifest["text_space"]["head_accuracy"] > 0.3  # chance is 0.1
    embeddings = np.load(outliers / "embeddings.npy")
    assert embeddings.shape == (10, 5, 32)  # the tiny text encoder's token space
    student = tmp_path / "oaml"
    run_oaml(
        "train", "--method", "oaml", "--out", str(student), "--data-root", str(data_root),
        *TINY, "--set", "student.train.epochs=1", "--set", f"student.train.outliers={outliers}",
        "--set", f"student.train.teacher_checkpoint={teacher / 'checkpoint.pt'}",
        "--set", "student.train.knn_outliers_per_class=20",
        "--set", "student.train.loss={energy: 0.1, m_in: -10.0, m_out: -4.0}",
    )  # fmt: skip
    payload = read_checkpoint(student / "checkpoint.pt")
    history = payload["history"][0]
    for term in ("deep_club", "energy", "kd", "club"):
        assert np.isfinite(history[f"train_{term}"])
    # DeepCLUB's variational net reads the 4 x 8 x 8 latents, not the 28 x 28 pixels.
    first = next(
        v
        for k, v in payload["method_state"].items()
        if k.startswith("deep_club_net") and v.ndim == 2
    )
    assert first.shape[1] == 4 * 8 * 8


def test_projection_head_learns_the_anchor_space():
    from oaml.synthesis.text_space import TextSpaceConfig, fit_projection

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16)).astype(np.float32) * 3
    labels = np.repeat(np.arange(3), 100)
    features = centres[labels] + rng.standard_normal((300, 16)).astype(np.float32)
    anchors = torch.randn(3, 8)
    head, accuracy = fit_projection(features, labels, anchors, TextSpaceConfig(epochs=10))
    assert accuracy > 0.95
    assert head(torch.from_numpy(features[:2])).shape == (2, 8)


def test_latent_forward_diffusion_noises_vae_latents(tiny_sd, tmp_path, data_root):
    """ID images through the SD VAE, noised at t (or denoised from t): latents and images."""
    args = [
        "synthesize", "--backend", "stable-diffusion-forward", "--checkpoint", str(tiny_sd),
        "--data-root", str(data_root), "--count", "12", "--size", "16", "--device", "cpu",
        "--batch-size", "4",
    ]  # fmt: skip
    run_oaml(*args, "--out", str(tmp_path / "a"))
    run_oaml(*args, "--out", str(tmp_path / "b"))
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["mode"] == "latent_forward_diffusion" and manifest["count"] == 12
    latents = load(tmp_path / "a", "latents")
    assert latents.shape == (12, 4, 8, 8) and load(tmp_path / "a", "images").shape[1:] == (
        16,
        16,
        3,
    )
    timesteps = load(tmp_path / "a", "latents", "timesteps")
    assert timesteps.min() >= 300 and timesteps.max() <= 700
    assert np.array_equal(latents, load(tmp_path / "b", "latents"))  # seeded
    assert sorted(set(load(tmp_path / "a", "latents", "labels").tolist())) == list(range(10))
    # The paper's img2img variant: denoised from each t under the class prompt.
    run_oaml(*args, "--out", str(tmp_path / "c"), "--denoise", "--steps", "4")
    denoised = load(tmp_path / "c", "latents")
    assert denoised.shape == latents.shape and not np.allclose(denoised, latents)
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["mode"].endswith("img2img")
