"""Human-readable views of an evaluation: a markdown table and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from oaml.io import atomic_path


def markdown_table(metrics: dict[str, Any]) -> str:
    """One row per OOD set plus near/far means; percentages with one decimal."""
    lines = [
        f"ID accuracy: {100 * metrics['id']['accuracy']:.2f}% (n={metrics['id']['n']}), "
        f"score: {metrics['score']}",
        "",
        "| set | group | AUROC | AUPR-In | AUPR-Out | FPR95 (95% ID kept) | FPR95 (OpenOOD) | n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in metrics["ood"].items():
        lines.append(
            f"| {name} | {m['group']} | {100 * m['auroc']:.2f} | {100 * m['aupr_in']:.2f} | "
            f"{100 * m['aupr_out']:.2f} | {100 * m['fpr95']:.2f} | "
            f"{100 * m['fpr95_openood']:.2f} | {m['n']} |"
        )
    for group in ("near", "far"):
        m = metrics.get(group)
        if m:
            lines.append(
                f"| **{group} mean** | | {100 * m['auroc']:.2f} | {100 * m['aupr_in']:.2f} | "
                f"{100 * m['aupr_out']:.2f} | {100 * m['fpr95']:.2f} | "
                f"{100 * m['fpr95_openood']:.2f} | |"
            )
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_evaluation(
    confidences: dict[str, np.ndarray], groups: dict[str, str], score: str, folder: str | Path
) -> list[Path]:
    """`score_histograms.png` (ID vs each OOD set, the threshold that keeps 95% of ID drawn
    dashed) and `roc_curves.png`; returns the paths."""
    import matplotlib

    from oaml.contract import confidence_threshold

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    id_conf = confidences["id"]
    names = [n for n in confidences if n != "id"]
    cols = min(3, max(1, len(names)))
    rows = max(1, int(np.ceil(len(names) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    low = min(float(c.min()) for c in confidences.values())
    high = max(float(c.max()) for c in confidences.values())
    bins = np.linspace(low, high, 60)
    threshold = confidence_threshold(id_conf)
    for ax, name in zip(axes.flat, names, strict=False):
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
        ax.hist(id_conf, bins=bins, alpha=0.55, density=True, label="ID", color="tab:blue")
        ax.hist(confidences[name], bins=bins, alpha=0.55, density=True, label=name, color="tab:red")
        ax.set_title(f"{name} ({groups.get(name, '')})")
        ax.set_xlabel(f"{score} confidence (higher = ID)")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    paths = [_save(fig, folder / "score_histograms.png")]
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name in names:
        labels = np.concatenate([np.ones_like(id_conf), np.zeros_like(confidences[name])])
        fpr, tpr, _ = roc_curve(labels, np.concatenate([id_conf, confidences[name]]))
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    ax.set_xlabel("OOD accepted as ID (FPR)")
    ax.set_ylabel("ID kept (TPR)")
    ax.set_title(f"ROC, {score} score")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(_save(fig, folder / "roc_curves.png"))
    plt.close(fig)
    return paths


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The evaluation's headline numbers, flat (id_accuracy, near_auroc, digits_fpr95, ...)."""
    flat = {"id_accuracy": float(metrics["id"]["accuracy"])}
    for group in ("near", "far"):
        for key, value in (metrics.get(group) or {}).items():
            flat[f"{group}_{key}"] = float(value)
    for name, values in metrics["ood"].items():
        for key in ("auroc", "fpr95"):
            flat[f"{name}_{key}"] = float(values[key])
    return flat
