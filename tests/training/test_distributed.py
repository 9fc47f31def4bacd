"""`oaml train --nproc 2` on real data (gloo, two CPU processes) against one process: the same
global batch gives the same loss curve and accuracy within a stated tolerance, only rank 0
writes, and a rank killed mid-run is restarted by torchrun and resumes from the last epoch."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from oaml.models.checkpoint import read_checkpoint
from tests.conftest import run_oaml

pytestmark = pytest.mark.slow

# Two processes see half a batch each: batch-norm statistics come from 50 images, not 100, and
# without SyncBatchNorm (NCCL only) that is the one difference from one process (the images of
# every global batch, ID and outliers, are the same). Measured here (2-core CPU): ce epoch
# losses within 0.5%, oaml's within 2.3% and 4.9% (its squared energy hinge amplifies the
# batch-norm difference; cross-entropy within 2%), final accuracies within 0.04.
LOSS_RTOL = 0.07
ACCURACY_ATOL = 0.05

STUDENT = [
    "--preset", "quick", "--device", "cpu",
    "--set", "student.train.train_subset=3000",
    "--set", "student.train.batch_size=100",
    "--set", "student.model.width=0.125",
    "--set", "student.train.optim.lr=0.05",
]  # fmt: skip


def _history(run: Path) -> list[dict]:
    return read_checkpoint(run / "checkpoint.pt")["history"]


def _agree(one: Path, two: Path) -> list[tuple[float, float]]:
    """Assert the two runs' epoch losses and accuracies agree; return the pairs of losses."""
    a, b = _history(one), _history(two)
    assert [h["epoch"] for h in a] == [h["epoch"] for h in b]
    pairs = [(x["train_loss"], y["train_loss"]) for x, y in zip(a, b, strict=True)]
    print("loss 1 vs 2 processes:", pairs)
    print(
        "val accuracy:", [(x["val_accuracy"], y["val_accuracy"]) for x, y in zip(a, b, strict=True)]
    )
    for x, y in pairs:
        assert y == pytest.approx(x, rel=LOSS_RTOL)
    assert b[-1]["val_accuracy"] == pytest.approx(a[-1]["val_accuracy"], abs=ACCURACY_ATOL)
    assert a[-1]["train_loss"] < a[0]["train_loss"]  # it trained
    return pairs


def _train(out: Path, data_root: Path, *args: str, nproc: int = 1):
    return run_oaml(
        "train", "--out", str(out), "--data-root", str(data_root), *STUDENT, *args,
        "--nproc", str(nproc),
    )  # fmt: skip


@pytest.fixture(scope="module")
def oaml_inputs(tmp_path_factory, data_root) -> list[str]:
    """A tiny teacher, forward-diffused outliers and a cross-entropy start: what the oaml
    method fine-tunes from, as the pipeline's student stage does."""
    folder = tmp_path_factory.mktemp("oaml_inputs")
    _train(folder / "start", data_root, "--set", "student.train.epochs=2")
    run_oaml(
        "train", "--out", str(folder / "teacher"), "--data-root", str(data_root),
        "--preset", "quick", "--method", "teacher", "--device", "cpu",
        "--set", "teacher.train.train_subset=3000", "--set", "teacher.train.epochs=1",
        "--set", "teacher.model.width=0.125",
    )  # fmt: skip
    run_oaml(
        "synthesize", "--out", str(folder / "outliers"), "--data-root", str(data_root),
        "--count", "600",
    )  # fmt: skip
    return [
        "--method", "oaml",
        "--set", f"student.train.teacher_checkpoint={folder / 'teacher' / 'checkpoint.pt'}",
        "--set", f"student.train.outliers={folder / 'outliers'}",
        "--set", f"student.train.init_checkpoint={folder / 'start' / 'checkpoint.pt'}",
        "--set", "student.train.knn_outliers_per_class=50",
        "--set", "student.train.optim.lr=0.01",
        # The quick preset's fine-tuning loss (energy margins from the CE start's energies).
        "--set", "student.train.loss={energy: 0.1, m_in: -10.0, m_out: -4.0}",
    ]  # fmt: skip


def _train_killing_rank_one(out: Path, data_root: Path, *args: str) -> str:
    """`oaml train --nproc 2 --max-restarts 1` with rank 1 killed once the first epoch's
    checkpoint is written: its output, after torchrun restarted the group."""
    exe = Path(sys.executable).with_name("oaml")
    command = [
        str(exe), "train", "--out", str(out), "--data-root", str(data_root), *STUDENT, *args,
        "--nproc", "2", "--max-restarts", "1",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)  # fmt: skip
    launcher, deadline = psutil.Process(proc.pid), time.time() + 300
    while not (out / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    victim = _rank_pid(launcher, "1")
    assert victim is not None, "rank 1 not found"
    os.kill(victim, signal.SIGKILL)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    return output


def _rank_pid(launcher: psutil.Process, rank: str) -> int | None:
    for child in launcher.children(recursive=True):
        try:
            if child.environ().get("RANK") == rank:
                return child.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def test_oaml_on_two_processes_survives_a_killed_rank_and_matches_one(
    tmp_path, data_root, oaml_inputs
):
    """The OAML fine-tune (every loss term, the teacher's cached outputs, the outlier batches)
    on two processes agrees with one: the richest case of the data-parallel step (plain
    cross-entropy is the same step with fewer terms; the TrainJob test runs it on two ranks).
    Rank 1 is killed after the first epoch's checkpoint: torchrun stops the group, starts a new
    one, and it continues from last.pt instead of starting over, to the same result."""
    epochs = ["--set", "student.train.epochs=2"]
    _train(tmp_path / "one", data_root, *oaml_inputs, *epochs)
    output = _train_killing_rank_one(tmp_path / "two", data_root, *oaml_inputs, *epochs)
    assert "restarting the group" in output and "resuming from" in output, output
    first_epoch_lines = [line for line in output.splitlines() if line.startswith("epoch 1/2")]
    assert len(first_epoch_lines) == 1, "the restarted group must not train epoch 1 again"
    _agree(tmp_path / "one", tmp_path / "two")
    terms = _history(tmp_path / "two")[-1]
    assert {"train_kd", "train_kd_feat", "train_club", "train_deep_club"} <= set(terms)
    # Only rank 0 writes and reports: one set of files, each epoch printed once.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint.pt", "last.pt"]
    assert output.count("epoch 2/2") == 1 and output.count("checkpoint:") == 1
    images = read_checkpoint(tmp_path / "two" / "checkpoint.pt")["lineage"]["train_images"]
    assert images == 3000
