"""`oaml bench knn`: DreamOOD's k-NN boundary sampling with faiss vs brute-force NumPy.

Both run the very same sampler (oaml.synthesis.knn) with the same seed; only the k-th-neighbour
search differs, so the outputs must be identical and the time ratio is the index's worth.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from oaml.bench.report import write_results
from oaml.synthesis.knn import KnnConfig, sample_outliers


def bench_knn(
    out: str | Path,
    classes: int = 10,
    per_class: int = 5000,
    dim: int = 768,
    outliers_per_class: int = 100,
    cfg: KnnConfig = KnnConfig(),
) -> dict:
    """Time both searches on random clustered features; check they agree; write knn.json/md."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((classes, 1, dim)).astype(np.float32)
    features = centres + 0.5 * rng.standard_normal((classes, per_class, dim)).astype(np.float32)
    timings, results = {}, {}
    for backend in ("faiss", "numpy"):
        started = time.perf_counter()
        results[backend] = sample_outliers(features, outliers_per_class, cfg, backend=backend)
        timings[backend] = time.perf_counter() - started
    a, b = results["faiss"], results["numpy"]
    same_shape = a.shape == b.shape
    # float32 distances from two libraries can order near-ties differently at high dimension,
    # so report how many outliers match, not just whether all do.
    rows_equal = np.isclose(a, b, atol=1e-5).all(axis=-1) if same_shape else np.zeros(1, bool)
    same = same_shape and bool(rows_equal.all())
    report = {
        "shape": [classes, per_class, dim],
        "outliers_per_class": outliers_per_class,
        "params": {
            "k": cfg.k,
            "select": cfg.select,
            "candidates": cfg.candidates,
            "keep": cfg.keep,
            "sigma": cfg.sigma,
        },
        "seconds": timings,
        "speedup_faiss_over_numpy": timings["numpy"] / timings["faiss"],
        "identical_outliers": same,
        "matching_outlier_fraction": float(rows_equal.mean()),
    }
    return write_results(Path(out), "knn.json", report)


def markdown(report: dict) -> str:
    """The search times and how far faiss's outliers match the exact search's."""
    return (
        "| search | seconds |\n|---|---|\n"
        + "".join(f"| {k} | {v:.2f} |\n" for k, v in report["seconds"].items())
        + f"\nfaiss speed-up: {report['speedup_faiss_over_numpy']:.2f}x; identical outliers: "
        f"{report['identical_outliers']} ({100 * report['matching_outlier_fraction']:.1f}% of "
        "rows equal)\n"
    )
