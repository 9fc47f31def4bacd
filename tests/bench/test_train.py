"""`oaml bench train`: every training stage of the recipe timed before and after in one run,
reported as images/s and their ratio."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_oaml


def test_bench_train_reports_each_stage_before_and_after(tmp_path, data_root):
    run_oaml(
        "bench", "train", "--out", str(tmp_path), "--data-root", str(data_root),
        "--steps", "1", "--rounds", "1", "--device", "cpu",
    )  # fmt: skip
    report = json.loads((tmp_path / "train.json").read_text())
    assert set(report["stages"]) == {"teacher", "start", "student"}
    for stage in report["stages"].values():
        assert stage["before"] > 0 and stage["after"] > 0
        assert stage["ratio"] == pytest.approx(stage["after"] / stage["before"])
        assert len(stage["samples"]["before"]) == len(stage["samples"]["after"]) == 1
    assert report["setup"]["device"] == "cpu" and report["steps"] == 1
    assert report["command"].startswith("oaml bench train") and report["machine"]  # stamped
    table = (tmp_path / "train.md").read_text()
    assert table.count("x |") == 3 and "after / before" in table
