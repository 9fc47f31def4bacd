"""Pinned runs: the trained weights do not depend on how many cores the process may use."""

import os
import subprocess
import sys

import pytest
import torch

from oaml.models.checkpoint import read_checkpoint
from oaml.reproducible import PINNED_ENVIRONMENT, pinned_environment
from tests.conftest import TINY


def test_the_pinned_environment_is_restored(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    with pinned_environment():
        assert all(os.environ[k] == v for k, v in PINNED_ENVIRONMENT.items())
    assert os.environ["OMP_NUM_THREADS"] == "7" and "ONEDNN_MAX_CPU_ISA" not in os.environ


def _train(out, data_root, cores: set[int]):
    command = [sys.executable, "-m", "oaml.cli", "train", "--out", str(out), "--data-root",
               str(data_root), *TINY, "--set", "student.train.epochs=1",
               "--set", "student.train.amp=false"]  # fmt: skip
    with pinned_environment():
        subprocess.run(command, check=True, capture_output=True, timeout=600,
                       preexec_fn=lambda: os.sched_setaffinity(0, cores))  # fmt: skip
    return read_checkpoint(out / "checkpoint.pt")["state_dict"]


@pytest.mark.slow
def test_pinned_training_gives_the_same_weights_on_one_core_or_all(tmp_path, data_root):
    cores = os.sched_getaffinity(0)
    if len(cores) < 2:
        pytest.skip("needs a machine with two cores to compare against one")
    one = _train(tmp_path / "one", data_root, {min(cores)})
    every = _train(tmp_path / "all", data_root, cores)
    for key, value in one.items():
        torch.testing.assert_close(value, every[key], rtol=0, atol=0, msg=key)
