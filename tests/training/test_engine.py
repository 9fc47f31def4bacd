"""The training loop on real data: a run killed mid-way and resumed equals an uninterrupted one."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from oaml.models.checkpoint import read_checkpoint
from tests.conftest import TINY, run_oaml

pytestmark = pytest.mark.slow

RUN = ["--preset", "quick", *TINY, "--set", "student.train.epochs=4"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, data_root):
    straight = tmp_path / "straight"
    run_oaml(
        "train", "--out", str(straight), "--data-root", str(data_root), *RUN, "--device", "cpu"
    )

    killed = tmp_path / "killed"
    exe = Path(sys.executable).with_name("oaml")
    args = ["train", "--out", str(killed), "--data-root", str(data_root), *RUN, "--device", "cpu"]
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (killed / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = read_checkpoint(killed / "last.pt")["epoch"]
    assert 1 <= done < 4, "the run must be killed part-way"
    assert not (killed / "checkpoint.pt").exists()

    run_oaml(*args, "--resume")
    a, b = _weights(straight / "checkpoint.pt"), _weights(killed / "checkpoint.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = read_checkpoint(killed / "checkpoint.pt")["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_checkpoint_describes_itself(tmp_path, data_root):
    out = tmp_path / "run"
    run_oaml(
        "train", "--out", str(out), "--data-root", str(data_root), *RUN[:-2],
        "--set", "student.train.epochs=1",
    )  # fmt: skip
    payload = read_checkpoint(out / "checkpoint.pt")
    spec = payload["spec"]
    assert spec["arch"] == "resnet18_32x32" and spec["in_chans"] == 1
    assert spec["input_size"] == 28 and len(spec["class_names"]) == 10
    assert spec["mean"] == [0.286] and spec["std"] == [0.353]
    assert payload["lineage"]["data_manifest_sha256"]
    assert payload["calibration"]["split"] == "val"
    assert "optimizer" not in payload  # the final file is for inference; last.pt resumes


def test_teacher_training_with_a_timm_model(tmp_path, data_root):
    out = tmp_path / "teacher"
    run_oaml(
        "train", "--method", "teacher", "--out", str(out), "--data-root", str(data_root),
        "--set", "teacher.train.train_subset=300", "--set", "teacher.train.epochs=1",
        "--set", "teacher.model.arch=timm/vit_tiny_patch16_224", "--set", "teacher.model.width=1.0",
        "--set", "teacher.model.kwargs={img_size: 28, patch_size: 7, depth: 1}",
    )  # fmt: skip
    payload = read_checkpoint(out / "checkpoint.pt")
    assert payload["spec"]["arch"] == "timm/vit_tiny_patch16_224"
    assert payload["lineage"]["role"] == "teacher"


def test_bad_override_exits_with_one_line(tmp_path, data_root):
    proc = run_oaml(
        "train", "--out", str(tmp_path), "--data-root", str(data_root),
        "--set", "student.train.epochs=zero", check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "expected an integer" in proc.stderr
