"""`oaml bench report`: stamped Markdown from a results file; every generated page of the docs is
exactly what it renders from the results file beside it (no number copied by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oaml.bench.report import ReportError, render, report
from oaml.bench.stamp import stamp
from tests.conftest import run_oaml

GENERATED = Path(__file__).resolve().parents[2] / "docs" / "generated"


def serve_result(**extra) -> dict:
    row = {"runtime": "onnxruntime session", "batch": 32, "images_per_second": 3000.0,
           "p50_ms": 10.0, "p99_ms": 12.0}  # fmt: skip
    return {"model": "/x/detector.onnx", "arch": "resnet18_32x32", "input": [28, 28, 1],
            "threads": "2 CPUs visible, 2 threads used", "rows": [row],
            "goals": {"server_c4_over_onnxruntime_b32": 0.95}, **extra}  # fmt: skip


def test_a_stamped_result_renders_with_where_and_how_it_was_measured(tmp_path):
    stamped = serve_result(**stamp(["bench", "serve", "--rounds", "3"]))
    text = render(stamped, "serve.json")
    assert "| onnxruntime session | 32 |" in text
    assert "| server_c4_over_onnxruntime_b32 | 0.950 |" in text
    assert text.rstrip().endswith(f"on {stamped['machine']}.")
    assert "`oaml bench serve --rounds 3` at commit" in text
    (tmp_path / "serve.json").write_text(json.dumps(stamped))
    run_oaml("bench", "report", str(tmp_path / "serve.json"), "--out", str(tmp_path / "s.md"))
    assert (tmp_path / "s.md").read_text() == text


def test_unstamped_unknown_or_unreadable_results_are_refused(tmp_path):
    with pytest.raises(ReportError, match="run the benchmark again"):
        render(serve_result(), "serve.json")
    with pytest.raises(ReportError, match="not a results file oaml renders"):
        render(serve_result(**stamp([])), "other.json")
    (tmp_path / "serve.json").write_text("{not json")
    refused = run_oaml("bench", "report", str(tmp_path / "serve.json"), check=False)
    assert refused.returncode == 2 and "cannot read" in refused.stderr


def test_every_generated_page_is_rendered_from_its_results_file():
    pages = sorted(GENERATED.glob("*.md"))
    assert pages, "docs/generated holds no page"
    for page in pages:
        results = page.with_suffix(".json")
        assert results.is_file(), f"{page.name} has no {results.name} it was generated from"
        assert page.read_text() == report(results), (
            f"{page.name} differs from its results: run `oaml bench report {results} --out {page}`"
        )
