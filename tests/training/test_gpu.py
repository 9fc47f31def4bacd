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
