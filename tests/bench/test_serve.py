"""`oaml bench serve` runs all three measurements and writes its table (short run)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_oaml

pytestmark = pytest.mark.slow


def test_bench_serve_writes_rows_and_ratios(tiny_checkpoint, tiny_onnx, tmp_path):
    """Multi-image JSON requests, this checkout's server beside its own HEAD (the before/after
    comparison), two interleaved rounds."""
    run_oaml(
        "bench", "serve", "--checkpoint", str(tiny_checkpoint), "--onnx", str(tiny_onnx),
        "--out", str(tmp_path), "--batch", "4", "--concurrency", "1,2", "--seconds", "0.5",
        "--images-per-request", "4", "--json", "--baseline", "HEAD", "--rounds", "2",
    )  # fmt: skip
    result = json.loads((tmp_path / "serve.json").read_text())
    runtimes = [(r["runtime"], r["batch"], r.get("concurrency")) for r in result["rows"]]
    assert runtimes == [
        ("pytorch eager", 1, None),
        ("pytorch eager", 4, None),
        ("onnxruntime session", 1, None),
        ("onnxruntime session", 4, None),
        ("http server", 4, 1),
        ("http server @ HEAD", 4, 1),
        ("http server", 4, 2),
        ("http server @ HEAD", 4, 2),
    ]
    for row in result["rows"]:
        assert row["images_per_second"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
        assert row.get("errors", 0) == 0
        assert row.get("request", "json") == "json"
    assert set(result["goals"]) == {
        "server_c1_over_onnxruntime_b4",
        "server_c2_over_onnxruntime_b4",
        "before_c1_over_onnxruntime_b4",
        "before_c2_over_onnxruntime_b4",
        "onnxruntime_over_pytorch_b4",
        "server_c1_p99_minus_onnxruntime_b1_p99_ms",
    }
    assert result["load"] == {
        "images": 4, "as_json": True, "max_batch": None, "baseline": "HEAD", "rounds": 2
    }  # fmt: skip
    assert (tmp_path / "baseline-HEAD" / "oaml" / "serving").is_dir()
    assert "| http server @ HEAD | 4 (json) |" in (tmp_path / "serve.md").read_text()


def test_bench_serve_names_an_unknown_baseline(tmp_path):
    from oaml.bench.stamp import source_tree

    with pytest.raises(ValueError, match="not a revision"):
        source_tree("no-such-revision-xyz", tmp_path)


def test_bench_serve_against_kserve_reports_the_ratio(tiny_checkpoint, tiny_onnx, tmp_path):
    """The KServe ModelServer peer (its own venv, built from PyPI) under the same load."""
    run_oaml(
        "bench", "serve", "--checkpoint", str(tiny_checkpoint), "--onnx", str(tiny_onnx),
        "--out", str(tmp_path), "--batch", "4", "--concurrency", "1,4", "--seconds", "0.5",
        "--peer", "kserve", "--peer-venv", str(tmp_path / "kserve-venv"), timeout=900,
    )  # fmt: skip
    result = json.loads((tmp_path / "serve.json").read_text())
    peer_rows = [r for r in result["rows"] if r["runtime"] == "kserve modelserver"]
    assert [r["concurrency"] for r in peer_rows] == [1, 4]
    assert all(r["errors"] == 0 and r["images_per_second"] > 0 for r in peer_rows)
    for level in (1, 4):
        assert result["goals"][f"oaml_over_kserve_ratio_c{level}"] > 0
    assert result["peer"] == {"name": "kserve", "version": "0.21.0"}
    assert "| kserve modelserver |" in (tmp_path / "serve.md").read_text()
