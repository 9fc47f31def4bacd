"""`oaml bench sd` on CPU with the tiny model: the report a GPU run fills with fp16 beside fp32."""

import json

import pytest

from tests.conftest import run_oaml


@pytest.mark.slow  # several CLI processes
def test_bench_sd_reports_images_per_second(tmp_path):
    out = tmp_path / "bench"
    run_oaml("bench", "sd", "--out", str(out), "--device", "cpu", "--steps", "2", "--images", "4")
    report = json.loads((out / "sd.json").read_text())
    assert report["device"] == "cpu" and report["size"] == 32
    assert report["images_per_second"]["fp32"] > 0
    assert report["fp16_speedup"] is None  # fp16 is measured on CUDA only
    assert "| fp32 |" in (out / "sd.md").read_text()
