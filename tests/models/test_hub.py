"""Pretrained weights through the Hugging Face Hub cache, offline: a small timm model written into
a cache folder in the hub's own layout (models--ORG--NAME/refs, snapshots), loaded by the real
code path (huggingface_hub, timm) with HF_HUB_OFFLINE=1. Nothing is mocked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from oaml.io import sha256_file
from oaml.models.hub import HubError, hub_repo
from tests.conftest import run_oaml

REPO = "timm/resnet10t.c3_in1k"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_hub_cache(home: Path) -> Path:
    """timm's resnet10t (random weights, 1000 classes) as the hub cache would hold it."""
    import timm
    from safetensors.torch import save_file

    repo = home / "hub" / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    model = timm.create_model("resnet10t", num_classes=1000)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, snapshot / "model.safetensors"
    )
    return snapshot / "model.safetensors"


def test_hub_names_resolve_to_repos_and_revisions():
    assert hub_repo("timm/vit_base_patch16_224.orig_in21k_ft_in1k", "hub") == (
        "timm/vit_base_patch16_224.orig_in21k_ft_in1k", None,
    )  # fmt: skip
    assert hub_repo("timm/resnet10t", "hub@v2") == (REPO, "v2")
    assert hub_repo("timm/anything", "hf-hub:me/my-weights@abc") == ("me/my-weights", "abc")
    for arch, value, message in (
        ("resnet18_32x32", "hub", "timm architecture"),
        ("timm/resnet10t", "hf-hub:nope", "ORG/NAME"),
        ("timm/resnet10t", "huggingface", "use 'hub'"),
    ):
        with pytest.raises(HubError, match=message):
            hub_repo(arch, value)


TEACHER = [
    "--method", "teacher", "--set", f"teacher.model.arch=timm/{REPO.split('/')[1]}",
    "--set", "teacher.model.pretrained=hub", "--set", "teacher.model.width=1.0",
    "--set", "teacher.model.input_size=32", "--set", "teacher.train.epochs=1",
    "--set", "teacher.train.train_subset=200", "--set", "teacher.train.batch_size=50",
    "--set", "teacher.train.optim.lr=0.0",
]  # fmt: skip


def test_a_teacher_starts_from_hub_weights_offline(tmp_path, data_root):
    weights = write_hub_cache(tmp_path / "hf")
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "teacher"
    run_oaml("train", "--out", str(out), "--data-root", str(data_root), *TEACHER, env=env)
    payload = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert payload["lineage"]["pretrained"] == {
        "repo_id": REPO, "revision": COMMIT, "filename": "model.safetensors",
        "sha256": sha256_file(weights),
    }  # fmt: skip
    # lr 0: the backbone's convolutions are the hub's (the head is new: other classes).
    from safetensors.torch import load_file

    saved = load_file(weights)
    state = payload["state_dict"]
    name = next(k for k in state if k.endswith("layer2.0.conv1.weight"))
    assert torch.equal(state[name], saved["layer2.0.conv1.weight"])


def test_weights_missing_from_the_cache_name_it_and_the_fix(tmp_path, data_root):
    env = {"HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    proc = run_oaml(
        "train", "--out", str(tmp_path / "t"), "--data-root", str(data_root), *TEACHER,
        env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"no weights of {REPO}" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr
    assert "pretrained_file" in proc.stderr and "Traceback" not in proc.stderr


def test_stable_diffusion_from_a_hub_repo_id_offline(tmp_path, data_root):
    """A (tiny, random) Stable Diffusion pipeline in the hub cache as ORG/NAME@main: the outlier
    stage generates with it and its manifest names the snapshot (the commit) it came from."""
    import json
    import shutil

    from oaml.synthesis.tiny_sd import build_tiny_sd

    repo = tmp_path / "hf" / "hub" / "models--me--tiny-sd"
    shutil.copytree(build_tiny_sd(tmp_path / "tiny"), repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    args = ["synthesize", "--backend", "stable-diffusion", "--benchmark", "fmnist",
            "--data-root", str(data_root), "--n-per-class", "1", "--steps", "2", "--size", "16",
            "--device", "cpu"]  # fmt: skip
    run_oaml(*args, "--checkpoint", "me/tiny-sd@main", "--out", str(tmp_path / "sd"), env=env)
    manifest = json.loads((tmp_path / "sd" / "manifest.json").read_text())
    assert manifest["count"] == 10
    snapshot = repo.resolve() / "snapshots" / COMMIT
    assert Path(manifest["checkpoint"]) == snapshot
    # Each file's SHA-256 too: the commit names the repo's state, the hashes the bytes used.
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert manifest["checkpoint_files"][unet] == sha256_file(snapshot / unet)
    assert "model_index.json" in manifest["checkpoint_files"]
    missing = run_oaml(
        *args, "--checkpoint", "me/other-sd", "--out", str(tmp_path / "x"), env=env, check=False
    )
    assert missing.returncode == 2 and "me/other-sd" in missing.stderr
    assert "not in the cache" in missing.stderr and "Traceback" not in missing.stderr
