"""`oaml bench quality`: train and evaluate each method under the same budget, over seeds.

Per seed, one cross-entropy student is trained from scratch (the preset's student); every method
then fine-tunes that same start for `finetune.epochs` at `finetune.lr` (`ce` just keeps
training), as the paper starts OAML from a CE checkpoint. The teacher and the forward-diffused
outliers (`outliers.count`) are shared inputs, built once per benchmark, like the data.
Every finished step is kept on disk, so a killed benchmark resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oaml import __version__
from oaml.bench.report import write_results
from oaml.config import Preset, load_preset, to_dict, with_train
from oaml.io import atomic_write_json, sha256_file
from oaml.recipe import (
    evaluate_student_scores,
    finetuned,
    outlier_methods,
    shared_inputs,
    student_methods,
    with_inputs,
)
from oaml.training.stage import train_stage

# "all": the plain mean AUROC over every near and far set (the issue goals' yardstick).
HEADLINE = (("id", "accuracy"), ("near", "auroc"), ("near", "fpr95"), ("far", "auroc"),
            ("far", "fpr95"), ("all", "auroc"))  # fmt: skip


@dataclass(frozen=True)
class QualityPlan:
    preset: str
    benchmark: str
    methods: tuple[str, ...]
    seeds: int
    overrides: tuple[str, ...] = ()
    # Post-hoc scores of the method x score table (each run evaluated once per score).
    scores: tuple[str, ...] = ()
    # Outlier sources (synthesis backends) each outlier method trains on, for the source
    # ablation; empty: the preset's own source only.
    sources: tuple[str, ...] = ()


def _check_same_settings(out: Path, settings: dict) -> None:
    """Refuse to mix runs of different settings in one folder (methods and seeds may grow)."""
    path = out / "settings.json"
    if not path.is_file() and any(out.glob("seed*/*/result.json")):
        raise ValueError(
            f"{out} holds results of unknown settings (no settings.json); use a new --out"
        )
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != settings:
            changed = sorted(k for k in settings if saved.get(k) != settings[k])
            raise ValueError(
                f"{out} holds a benchmark run with other settings ({', '.join(changed)}); "
                "use a new --out"
            )
    atomic_write_json(path, settings)


def run_quality(plan: QualityPlan, out: str | Path, data_root=None, device="auto") -> dict:
    """Run (or resume) the benchmark; write results.json, results.md and results.png."""
    from oaml.data.benchmarks import get_benchmark
    from oaml.data.prepare import prepare

    out = Path(out).resolve()
    preset = load_preset(plan.preset, [*plan.overrides, f"benchmark={plan.benchmark}"])
    known = student_methods()
    unknown = [m for m in plan.methods if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; registered: {', '.join(known)}")
    root = Path(data_root or preset.data_root or out / "data").resolve()
    benchmark = get_benchmark(plan.benchmark, root)
    if benchmark.preparable:
        prepare(plan.benchmark, root)
    benchmark.require(root)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_settings(
        out, {"preset": to_dict(preset), "data_root": str(root), "oaml_version": __version__}
    )

    # Listed sources are built each in a folder of its own; the preset's only when unlisted.
    methods = set(plan.methods)
    inputs = shared_inputs(preset, methods, root, out / "shared", device, not plan.sources)
    outlier_sets = _outlier_sources(plan, preset, root, out / "shared", inputs, methods)
    runs = []
    for seed in range(plan.seeds):
        seeded = with_train(preset, "student", seed=seed)
        print(f"seed {seed}: cross-entropy start")
        start_dir = out / f"seed{seed}" / "start"
        start = train_stage(seeded, "student", root, start_dir, device=device, method="ce")
        for method in plan.methods:
            sources = outlier_sets if method in outlier_methods() else {None: None}
            for source, outliers in sources.items():
                with_shared = with_inputs(seeded, outliers, inputs.get("teacher"))
                name = f"{method}@{source}" if source and plan.sources else method
                run = _finetune(
                    with_shared, method, start.checkpoint, root, out / f"seed{seed}" / name,
                    device, plan.scores,
                )  # fmt: skip
                runs.append({**run, "label": name, **({"source": source} if source else {})})
    finetune = preset.finetune
    results = {
        "preset": plan.preset,
        "benchmark": plan.benchmark,
        "methods": list(plan.methods),
        "seeds": plan.seeds,
        "budget": {
            "start": f"{preset.student.train.epochs} epochs cross-entropy",
            "finetune_epochs": finetune.epochs,
            "finetune_lr": finetune.lr,
            "train_images": preset.student.train.train_subset,
        },
        "losses": finetune.losses,
        "runs": runs,
        "summary": summarize(runs),
        **({"sources": list(outlier_sets)} if plan.sources else {}),
    }
    if plan.scores:
        results["scores"] = list(plan.scores)
        results["score_summary"] = summarize_scores(runs, plan.scores)
    results = write_results(out, "results.json", results)
    plot(results, out / "results.png")
    return results


def _outlier_sources(
    plan: QualityPlan,
    preset: Preset,
    root: Path,
    folder: Path,
    inputs: dict[str, Path],
    methods: set[str],
) -> dict[str, Path]:
    """{source: outlier folder}: the preset's own outliers, or each of `plan.sources` built
    under folder/outliers-<source> (once; a killed build resumes)."""
    from dataclasses import replace

    from oaml.synthesis.backends import preset_request, synthesize

    if not outlier_methods() & methods:
        return {}
    if not plan.sources:
        return {preset_request(preset, root, inputs["outliers"])[0]: inputs["outliers"]}
    found = {}
    for source in plan.sources:
        # The preset's Stable Diffusion weights only where the source names them.
        weights = preset.outliers.sd_checkpoint if "stable-diffusion" in source else None
        chosen = replace(preset.outliers, source=source, sd_checkpoint=weights)
        sourced = replace(preset, outliers=chosen)
        backend, request = preset_request(sourced, root, folder / f"outliers-{source}")
        print(f"outliers: {preset.outliers.count} images by {backend}")
        synthesize(backend, request)
        found[source] = request.out
    return found


def _finetune(
    seeded: Preset,
    method: str,
    start: Path,
    root: Path,
    run_dir: Path,
    device: str,
    scores: tuple[str, ...] = (),
) -> dict:
    """One method's fine-tune of `start`, evaluated (with each of `scores` too); kept in
    run_dir/result.json and reused while the start is unchanged and it has every score."""
    seed = seeded.student.train.seed
    result_file = run_dir / "result.json"
    start_sha = sha256_file(start)
    if result_file.is_file():
        kept = json.loads(result_file.read_text())
        # Else the start was retrained, or a score was asked for that it lacks.
        if kept.get("start_sha256") == start_sha and set(scores) <= set(kept.get("by_score", {})):
            return kept
    print(f"seed {seed}: {method}")
    started = time.perf_counter()
    tuned = finetuned(seeded, method, start)
    trained = train_stage(tuned, "student", root, run_dir, device=device, method=method)
    evaluated = evaluate_student_scores(tuned, trained.checkpoint, root, device, scores)
    run = {
        "method": method,
        "seed": seed,
        "checkpoint": str(trained.checkpoint),
        "metrics": evaluated[tuned.evaluation.score].metrics,
        "seconds": round(time.perf_counter() - started, 1),
        "start_sha256": start_sha,
    }
    if scores:
        run["by_score"] = {name: evaluated[name].metrics for name in scores}
    atomic_write_json(result_file, run)
    return run


def _value(metrics: dict, group: str, key: str) -> float:
    if group == "id":
        return metrics["id"][key]
    if group in ("near", "far"):
        return metrics[group][key] if metrics.get(group) else float("nan")
    if group == "all":
        sets = [v for v in metrics["ood"].values() if v.get("group") in ("near", "far")]
        return float(np.mean([v[key] for v in sets])) if sets else float("nan")
    return metrics["ood"][group][key]


def _label(run: dict) -> str:
    """A run's row in the tables: its method, with its outlier source in a source ablation."""
    return run.get("label", run["method"])


def summarize(runs: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and standard deviation (over seeds) of every headline and per-set metric."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for method in dict.fromkeys(_label(r) for r in runs):
        chosen = [r["metrics"] for r in runs if _label(r) == method]
        keys = list(HEADLINE)
        keys += [(name, k) for name in chosen[0]["ood"] for k in ("auroc", "fpr95")]
        summary[method] = {}
        for group, key in keys:
            values = np.array([_value(m, group, key) for m in chosen], dtype=np.float64)
            summary[method][f"{group}.{key}"] = {
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "n": len(values),
            }
    return summary


SCORE_COLUMNS = (("near", "auroc"), ("far", "auroc"))


def summarize_scores(runs: list[dict], scores: tuple[str, ...]) -> dict:
    """{method: {score: {"near.auroc" | "far.auroc": mean, std, n}}} over seeds."""
    table: dict[str, dict[str, dict]] = {}
    for method in dict.fromkeys(_label(r) for r in runs):
        chosen = [r["by_score"] for r in runs if _label(r) == method]
        table[method] = {}
        for score in scores:
            cells = {}
            for group, key in SCORE_COLUMNS:
                values = np.array([_value(m[score], group, key) for m in chosen], np.float64)
                cells[f"{group}.{key}"] = {
                    "mean": float(values.mean()),
                    "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "n": len(values),
                }
            table[method][score] = cells
    return table


def score_markdown(results: dict) -> str:
    """The method x score table: near / far AUROC per cell, percent, mean ± std over seeds."""
    table, scores = results["score_summary"], results["scores"]
    lines = [
        "Near / far AUROC (percent, mean ± std over seeds) of each method under each score.",
        "",
        "| method | " + " | ".join(scores) + " |",
        "|---" * (len(scores) + 1) + "|",
    ]
    for method, by_score in table.items():
        cells = []
        for score in scores:
            near, far = by_score[score]["near.auroc"], by_score[score]["far.auroc"]
            cells.append(
                f"{100 * near['mean']:.2f} ± {100 * near['std']:.2f} / "
                f"{100 * far['mean']:.2f} ± {100 * far['std']:.2f}"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown(results: dict) -> str:
    """The table: mean +- std over seeds, in percent."""
    summary = results["summary"]
    first = next(iter(summary.values()))
    groups = ("near", "far")
    sets = [k.split(".")[0] for k in first if k.endswith(".auroc")]
    sets = [s for s in sets if s not in (*groups, "all")]
    columns = [("id.accuracy", "ID acc")]
    columns += [(f"{g}.{m}", f"{g} {m.upper()}") for g in groups for m in ("auroc", "fpr95")]
    columns += [("all.auroc", "all-sets AUROC")]
    columns += [(f"{s}.auroc", f"{s} AUROC") for s in sets]
    budget = results["budget"]
    lines = [
        f"{results['benchmark']}, preset {results['preset']}, {results['seeds']} seed(s); "
        f"each method fine-tunes the same {budget['start']} start for "
        f"{budget['finetune_epochs']} epochs at lr {budget['finetune_lr']}. "
        "Percent, mean ± std over seeds; FPR95 = OOD accepted at 95% ID kept.",
        "",
        "| method | " + " | ".join(title for _, title in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for method, values in summary.items():
        cells = [
            f"{100 * values[key]['mean']:.2f} ± {100 * values[key]['std']:.2f}"
            if key in values
            else "n/a"
            for key, _ in columns
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if results.get("score_summary"):
        text += "\n" + score_markdown(results)
    return text


def plot(results: dict, path: Path) -> None:
    """Grouped bars of ID accuracy and near/far AUROC per method, with seed std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    keys = [("id.accuracy", "ID accuracy"), ("near.auroc", "near AUROC"),
            ("far.auroc", "far AUROC")]  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(summary))
    for i, (method, values) in enumerate(summary.items()):
        xs = np.arange(len(keys)) + i * width
        ax.bar(xs, [100 * values[k]["mean"] for k, _ in keys], width,
               yerr=[100 * values[k]["std"] for k, _ in keys], label=method, capsize=3)  # fmt: skip
    ax.set_xticks(np.arange(len(keys)) + width * (len(summary) - 1) / 2, [t for _, t in keys])
    ax.set_ylabel("percent")
    ax.set_ylim(40, 100)
    ax.set_title(f"{results['benchmark']}: {results['seeds']} seed(s), preset {results['preset']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
