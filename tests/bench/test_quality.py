"""`oaml bench quality` end to end on tiny settings: every method from the same start, results
files as ACCEPTANCE.md says, a re-run reuses finished steps, other settings are refused."""

from __future__ import annotations

import json

import pytest

from oaml.models.checkpoint import read_checkpoint
from tests.conftest import TINY_RECIPE, run_oaml

pytestmark = pytest.mark.slow


def test_quality_benchmark_runs_resumes_and_guards_its_folder(data_root, tmp_path):
    out = tmp_path / "bench"
    args = [
        "bench", "quality", "--benchmark", "fmnist6", "--methods", "ce,oaml",
        "--seeds", "1", "--data-root", str(data_root), "--out", str(out), *TINY_RECIPE,
    ]  # fmt: skip
    proc = run_oaml(*args, timeout=1200)
    results = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in results["runs"]] == [("ce", 0), ("oaml", 0)]
    start = out / "seed0" / "start" / "checkpoint.pt"
    for run in results["runs"]:
        lineage = read_checkpoint(run["checkpoint"])["lineage"]
        assert lineage["init_checkpoint"] == str(start) and lineage["method"] == run["method"]
        metrics = run["metrics"]
        assert metrics["benchmark"] == "fmnist6" and 0 <= metrics["near"]["auroc"] <= 1
        assert metrics["score"] == "vim"  # the preset's
        assert run["seconds"] > 0
    assert set(results["summary"]) == {"ce", "oaml"}
    assert results["summary"]["ce"]["fmnist_held_out.auroc"]["n"] == 1
    table = (out / "results.md").read_text()
    assert all(f"| {m} |" in table for m in ("ce", "oaml")) and table in proc.stdout
    assert (out / "results.png").stat().st_size > 0

    # A second run reuses every finished step (no training: the results are byte-identical).
    before = (out / "seed0" / "oaml" / "result.json").read_bytes()
    run_oaml(*args, timeout=300)
    assert (out / "seed0" / "oaml" / "result.json").read_bytes() == before

    # The method x score table: the trained runs are kept, only the new scores are computed.
    scores = ("ebo", "knn", "vim")
    scored = run_oaml(*args, "--scores", ",".join(scores), timeout=900)
    results = json.loads((out / "results.json").read_text())
    assert results["scores"] == list(scores)
    assert set(results["score_summary"]) == {"ce", "oaml"}
    for run in results["runs"]:
        assert set(run["by_score"]) == set(scores)
        assert run["by_score"]["vim"] == run["metrics"]  # the preset's score, one evaluation
        assert run["by_score"]["ebo"]["score"] == "ebo"
        assert run["by_score"]["knn"]["score_settings"]["knn_k"] == 50
    assert "| oaml | " in scored.stdout and "knn" in (out / "results.md").read_text()

    # The outlier-source ablation: each outlier method once per source, from the same start
    # (oe_energy: the other outlier method, trained here on both sources).
    ablation = [a if a != "ce,oaml" else "ce,oe_energy" for a in args]
    run_oaml(*ablation, "--sources", "forward-diffusion,class-mix", timeout=900)
    results = json.loads((out / "results.json").read_text())
    assert results["sources"] == ["forward-diffusion", "class-mix"]
    labels = [r["label"] for r in results["runs"]]
    assert labels == ["ce", "oe_energy@forward-diffusion", "oe_energy@class-mix"]
    assert set(results["summary"]) == set(labels)
    mixed = read_checkpoint(results["runs"][2]["checkpoint"])["lineage"]
    assert mixed["outliers"] == str(out / "shared" / "outliers-class-mix")
    assert mixed["init_checkpoint"] == str(start)
    diffused = read_checkpoint(results["runs"][1]["checkpoint"])["lineage"]
    assert diffused["outliers"] == str(out / "shared" / "outliers-forward-diffusion")

    other = run_oaml(*args, "--set", "finetune.lr=0.5", check=False)
    assert other.returncode == 2 and "other settings" in other.stderr


def test_summary_means_every_near_and_far_set_over_seeds():
    """all.auroc: the plain mean over the benchmark's sets (not the extra ones) per seed, then
    mean and std over seeds, beside near and far."""
    from oaml.bench.quality import markdown, summarize

    def metrics(near: float, far: tuple[float, float]) -> dict:
        sets = {"held": {"auroc": near, "fpr95": 0.5, "group": "near"}}
        sets |= {f"far{i}": {"auroc": a, "fpr95": 0.1, "group": "far"} for i, a in enumerate(far)}
        sets["mine"] = {"auroc": 0.0, "fpr95": 1.0, "group": "extra"}
        return {"id": {"accuracy": 0.9}, "ood": sets, "near": {"auroc": near, "fpr95": 0.5},
                "far": {"auroc": sum(far) / 2, "fpr95": 0.1}}  # fmt: skip

    runs = [{"method": "oaml", "metrics": metrics(0.6, (0.9, 0.9))},
            {"method": "oaml", "metrics": metrics(0.9, (0.9, 0.6))}]  # fmt: skip
    cell = summarize(runs)["oaml"]["all.auroc"]
    assert cell["mean"] == pytest.approx(0.8) and cell["n"] == 2  # (0.8 + 0.8) / 2
    assert cell["std"] == pytest.approx(0.0)
    budget = {"start": "3 epochs", "finetune_epochs": 2, "finetune_lr": 0.01}
    table = markdown({"summary": summarize(runs), "benchmark": "b", "preset": "p", "seeds": 2,
                      "budget": budget})  # fmt: skip
    assert "| all-sets AUROC |" in table and "| 80.00 ± 0.00 |" in table
    assert "all AUROC" not in table  # not repeated as a set
