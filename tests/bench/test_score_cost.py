"""`oaml bench scores`: every servable score exported and timed beside the energy baseline."""

import json

import pytest

from tests.conftest import run_oaml

pytestmark = pytest.mark.slow


def test_bench_scores_exports_and_times_each_score(tmp_path, tiny_checkpoint, data_root):
    out = tmp_path / "scores"
    proc = run_oaml(
        "bench", "scores", "--checkpoint", str(tiny_checkpoint), "--out", str(out),
        "--data-root", str(data_root), "--scores", "knn,ebo,vim", "--seconds", "0.2",
        "--rounds", "1", "--fit-images", "600",
    )  # fmt: skip
    result = json.loads((out / "scores.json").read_text())
    rows = {row["score"]: row for row in result["rows"]}
    assert list(rows) == ["ebo", "knn", "vim"] and rows["ebo"]["ratio_to_ebo"] == 1.0  # ebo first
    assert all(row["images_per_second"] > 0 for row in rows.values())
    # The bank of 600 features is inside the knn graph: a larger file than the energy's.
    assert rows["knn"]["megabytes"] > rows["ebo"]["megabytes"]
    assert json.loads(rows["knn"]["settings"]) == {"k": 50, "bank": 600}
    assert json.loads(rows["vim"]["settings"])["principal_dim"] > 0
    assert "| knn |" in proc.stdout and (out / "scores.md").is_file()
