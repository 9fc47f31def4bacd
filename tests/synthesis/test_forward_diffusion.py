"""Forward-diffusion outliers on the real benchmark: schedule, determinism, resume after a kill."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from oaml.synthesis.forward_diffusion import (
    ForwardDiffusionConfig,
    load_outlier_images,
    noise_images,
    scheduler,
    synthesize,
)
from tests.conftest import run_oaml


def test_schedule_is_stable_diffusions():
    sched = scheduler(ForwardDiffusionConfig())
    betas = sched.betas
    assert betas[0].item() == pytest.approx(0.00085) and betas[-1].item() == pytest.approx(0.012)
    # scaled_linear: linear in sqrt(beta)
    roots = betas.sqrt()
    assert torch.allclose(roots[1:] - roots[:-1], roots[1:2] - roots[0:1], atol=1e-7)


def test_noise_matches_the_closed_form():
    sched = scheduler(ForwardDiffusionConfig())
    images = np.full((1, 2, 2, 1), 255, np.uint8)  # x0 = 1 everywhere
    generator = torch.Generator().manual_seed(0)
    eps = torch.randn((1, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    noised = noise_images(images, np.array([500]), generator, sched)
    abar = sched.alphas_cumprod[500]
    expected = (abar.sqrt() + (1 - abar).sqrt() * eps).add(1).mul(127.5).round().clamp(0, 255)
    assert noised[0, :, :, 0].tolist() == expected[0, 0].to(torch.uint8).tolist()


def test_bad_timesteps_are_named(tmp_path):
    with pytest.raises(ValueError, match="t_min <= t_max"):
        synthesize("fmnist", tmp_path, tmp_path, ForwardDiffusionConfig(t_min=800, t_max=100))


@pytest.mark.slow
def test_shards_manifest_and_resume_after_deleting_a_shard(tmp_path, data_root):
    cfg = ForwardDiffusionConfig(count=300, shard_size=100, seed=1)
    manifest = synthesize("fmnist", data_root, tmp_path / "a", cfg)
    meta = json.loads(manifest.read_text())
    assert meta["images"] == ["images_00000.npz", "images_00001.npz", "images_00002.npz"]
    images = load_outlier_images(tmp_path / "a")
    assert images.shape == (300, 28, 28, 1) and images.dtype == np.uint8
    with np.load(tmp_path / "a" / "images_00001.npz") as shard:
        assert shard["timesteps"].min() >= 300 and shard["timesteps"].max() <= 700
    first = (tmp_path / "a" / "images_00001.npz").read_bytes()
    (tmp_path / "a" / "images_00001.npz").unlink()
    manifest.unlink()
    synthesize("fmnist", data_root, tmp_path / "a", cfg)
    assert (tmp_path / "a" / "images_00001.npz").read_bytes() == first
    assert json.loads(manifest.read_text())["shards_sha256"] == meta["shards_sha256"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path, data_root):
    args = ["synthesize", "--data-root", str(data_root), "--count", "8000", "--shard-size", "400"]
    run_oaml(*args, "--out", str(tmp_path / "straight"))
    exe = Path(sys.executable).with_name("oaml")
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [str(exe), *args, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while not (killed / "images_00000.npz").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "manifest.json").exists(), "the run must be killed part-way"
    run_oaml(*args, "--out", str(killed))
    straight = json.loads((tmp_path / "straight" / "manifest.json").read_text())
    resumed = json.loads((killed / "manifest.json").read_text())
    assert resumed["shards_sha256"] == straight["shards_sha256"]
    assert not list(killed.glob(".*.tmp"))  # no half-written shard left behind


def test_unfinished_run_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing or unfinished"):
        load_outlier_images(tmp_path)
