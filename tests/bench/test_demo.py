"""`oaml bench demo`: a finished demo's stage seconds and its student beside the CE start, in
the stamped table the docs include (the demo itself is the session's tiny one)."""

import json

import pytest

from tests.conftest import run_oaml

pytestmark = pytest.mark.slow


def test_the_demo_benchmark_reads_finished_demos_into_one_table(demo_run, tmp_path):
    out = tmp_path / "bench"
    out.mkdir()
    # Both variants finished already (a resumed benchmark): read, not run again.
    for name in ("baseline", "current"):
        (out / name).symlink_to(demo_run.out, target_is_directory=True)
    proc = run_oaml("bench", "demo", "--out", str(out), "--baseline", "HEAD", timeout=120)
    result = json.loads((out / "demo.json").read_text())
    assert [v["label"] for v in result["variants"]] == ["HEAD", "this checkout"]
    current = result["variants"][1]
    summary = demo_run.summary
    assert current["seconds"] == summary["seconds"]
    assert current["stage_seconds"] == summary["stage_seconds"]
    assert current["student"]["id_accuracy"] == summary["metrics"]["id"]["accuracy"]
    assert current["start"]["score"] == summary["metrics"]["score"]
    assert 0 <= current["start"]["far_auroc"] <= 1
    table = (out / "demo.md").read_text()
    assert table in proc.stdout and "Measured with `oaml bench demo" in table
    # Each stage in both columns with their ratio (the same run twice: 1.00x).
    assert f"| teacher | {summary['stage_seconds']['teacher']:.1f} |" in table
    assert "| **`oaml demo`** |" in table and "1.00x" in table
    percent = f"{100 * summary['metrics']['id']['accuracy']:.2f}"
    assert f"| this checkout: OAML student | {summary['metrics']['score']} | {percent} |" in table
    assert "| this checkout: cross-entropy start |" in table
