"""`oaml bench import`: each kind of picture imported, timed against the plain loop, stamped."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_oaml


@pytest.mark.slow
def test_bench_import_small(tmp_path):
    run_oaml("bench", "import", "--out", str(tmp_path), "--photos", "20", "--clipart", "40",
             "--sprites", "60", "--baseline-files", "5")  # fmt: skip
    report = json.loads((tmp_path / "import.json").read_text())
    rows = {r["set"]: r for r in report["sets"]}
    assert set(rows) == {"sprites", "clipart", "photos"}  # `make setup` installs the packages
    assert rows["photos"]["images"] == 20 and rows["photos"]["size"] == 224
    assert rows["sprites"]["size"] == 72 and rows["sprites"]["images"] == 60
    for row in rows.values():
        assert row["images_per_second"] > 0 and row["loop_images_per_second"] > 0
        hours = 1e6 / row["images_per_second"] / 3600  # from the rate as rounded in the file
        assert row["hours_per_million"] == pytest.approx(hours, rel=0.02, abs=0.01)
    assert report["command"].startswith("oaml bench import") and report["machine"]
    table = (tmp_path / "import.md").read_text()
    assert "12-megapixel JPEG photos" in table and f"at commit {report['commit']}" in table
