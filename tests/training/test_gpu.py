"""GPU checks (skipped without CUDA): AMP training and evaluation on the device."""

import json

import pytest

from tests.conftest import TINY, run_oaml

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_amp_training_and_evaluation_on_cuda(tmp_path, data_root):
    out = tmp_path / "run"
    run_oaml(
        "train", "--out", str(out), "--data-root", str(data_root), *TINY,
        "--set", "student.train.epochs=2", "--device", "cuda",
    )  # fmt: skip
    run_oaml(
        "evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--data-root", str(data_root),
        "--device", "cuda", "--json", str(tmp_path / "m.json"),
    )  # fmt: skip
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["id"]["accuracy"] > 0.2


def test_nccl_data_parallel_on_every_gpu_matches_one(tmp_path, data_root):
    """NCCL with SyncBatchNorm on all GPUs of the machine against one GPU (needs two or more)."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus < 2:
        pytest.skip(f"needs two or more GPUs for NCCL data parallelism, found {gpus}")
    runs = {}
    for nproc in (1, gpus):
        out = tmp_path / f"n{nproc}"
        run_oaml(
            "train", "--out", str(out), "--data-root", str(data_root), *TINY,
            "--set", "student.train.batch_size=" + str(20 * gpus),
            "--set", "student.train.epochs=2", "--device", "cuda", "--nproc", str(nproc),
        )  # fmt: skip
        from oaml.models.checkpoint import read_checkpoint

        runs[nproc] = read_checkpoint(out / "checkpoint.pt")
    assert runs[gpus]["lineage"]["processes"] == gpus
    one, many = runs[1]["history"], runs[gpus]["history"]
    for a, b in zip(one, many, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.07)
