"""`oaml bench knn`: faiss and brute force give identical outliers; the report has the ratio."""

from __future__ import annotations

import json

from tests.conftest import run_oaml


def test_bench_knn_small(tmp_path):
    run_oaml("bench", "knn", "--out", str(tmp_path), "--classes", "2", "--per-class", "400",
             "--dim", "32", "--outliers-per-class", "20")  # fmt: skip
    report = json.loads((tmp_path / "knn.json").read_text())
    assert report["identical_outliers"] is True
    assert report["shape"] == [2, 400, 32]
    assert report["speedup_faiss_over_numpy"] > 0
    assert "faiss speed-up" in (tmp_path / "knn.md").read_text()
