"""`oaml demo` end to end: the main job writes the summary ACCEPTANCE.md describes."""

import json
from pathlib import Path

import pytest

from oaml.models.checkpoint import read_checkpoint
from tests.conftest import TINY_RECIPE, run_oaml

pytestmark = pytest.mark.slow


def test_demo_writes_summary(tmp_path, data_root):
    out = tmp_path / "demo"
    run_oaml(
        "demo", "--out", str(out), "--data-root", str(data_root), *TINY_RECIPE,
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    for key in ("tracking_uri", "registered_model", "version", "alias", "checkpoint", "onnx",
                "data_root", "metrics", "seconds"):  # fmt: skip
        assert key in summary
    assert Path(summary["checkpoint"]).is_file()
    # The recipe ran: teacher, outliers, a CE start, the OAML student fine-tuned from it.
    lineage = read_checkpoint(summary["checkpoint"])["lineage"]
    assert lineage["method"] == "oaml" and lineage["init_checkpoint"] == summary["start_checkpoint"]
    assert Path(lineage["teacher_checkpoint"]).is_file() and Path(lineage["outliers"]).is_dir()
    assert Path(summary["data_root"]) == data_root.resolve()
    assert summary["metrics"]["benchmark"] == "fmnist" and summary["seconds"] > 0
    assert (out / "evaluation" / "roc_curves.png").is_file()
    assert (out / "evaluation" / "scores" / "id.npy").is_file()
    # The exported detector is the evaluated model: same ID accuracy under onnxruntime.
    from oaml.evaluation.evaluate import evaluate

    onnx_metrics = evaluate(None, "fmnist", data_root, onnx=summary["onnx"]).metrics
    assert onnx_metrics["id"]["accuracy"] == pytest.approx(
        summary["metrics"]["id"]["accuracy"], abs=2e-4
    )
    # Finished steps are reused only when their settings match: other settings are refused.
    again = run_oaml(
        "demo", "--out", str(out), "--data-root", str(data_root), *TINY_RECIPE,
        "--set", "bench.finetune_lr=0.5", check=False,
    )  # fmt: skip
    assert again.returncode == 2 and "other settings (optim)" in again.stderr


def test_data_prepare_command_verifies_a_prepared_root(data_root):
    proc = run_oaml("data", "prepare", "--benchmark", "fmnist", "--root", str(data_root))
    assert "verified" in proc.stdout
