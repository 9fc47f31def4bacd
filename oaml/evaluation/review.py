"""What an evaluation stage leaves for people: the metrics (JSON and table), per-sample scores,
the plots and the HTML report, written into one folder."""

from __future__ import annotations

from pathlib import Path

from oaml.data.benchmarks import get_benchmark
from oaml.evaluation.evaluate import Evaluation, save_scores
from oaml.evaluation.html_report import Reference, render_report
from oaml.evaluation.report import markdown_table, plot_evaluation
from oaml.io import atomic_write_json, atomic_write_text

REPORT = "report.html"
REFERENCES = "references.json"
START_REFERENCE = "cross-entropy start"  # the reference a fine-tuned student is set beside


def publish_evaluation(
    evaluation: Evaluation,
    out: str | Path,
    references: list[Reference] = (),
    outliers: str | Path | None = None,
) -> list[Path]:
    """metrics.json, metrics.md, references.json (each reference's metrics and note, by name),
    scores/, the plots and report.html into `out`; returns the files to show (the plots, the
    outlier grid where outliers are given, then the report)."""
    from oaml.synthesis.outlier_sets import outlier_grid

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = evaluation.metrics
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "metrics.md", markdown_table(metrics))
    shown = {ref.name: {"metrics": ref.metrics, "note": ref.note} for ref in references}
    atomic_write_json(out / REFERENCES, shown)
    save_scores(evaluation, out / "scores")
    plots = plot_evaluation(evaluation.confidences, evaluation.groups, metrics["score"], out)
    grid = outlier_grid(outliers, out / "outliers_grid.png") if outliers else None
    write_report(evaluation, plots, out / REPORT, references, grid)
    return [*plots, *([grid] if grid else []), out / REPORT]


def write_report(
    evaluation: Evaluation,
    plots: list[Path],
    path: str | Path,
    references: list[Reference] = (),
    outlier_grid: Path | None = None,
) -> Path:
    """The HTML report of `evaluation` at `path` (atomically)."""
    bench = evaluation.bench or get_benchmark(evaluation.metrics["benchmark"])
    page = render_report(
        evaluation, plots, list(bench.class_names), bench.image_mode, references, outlier_grid
    )
    atomic_write_text(path, page)
    return Path(path)
