"""The promotion gate: which metrics a challenger is judged on, whether two versions can be
compared at all, and the comparison itself. Fails closed: unusable metrics, a metric only one
side has, another benchmark, other data or another served score all fail."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

METRIC_PREFIX = "metric."
# The gated metrics, read from an evaluation's JSON (ACCEPTANCE's evaluate shape).
GATED_METRICS = {
    "id_accuracy": ("id", "accuracy"),
    "near_auroc": ("near", "auroc"),
    "far_auroc": ("far", "auroc"),
    "near_fpr95": ("near", "fpr95"),
    "far_fpr95": ("far", "fpr95"),
}


@dataclass(frozen=True)
class Gate:
    """When a challenger may replace the champion (metrics are fractions in [0, 1])."""

    auroc_tolerance: float = 0.0  # near/far AUROC may be at most this much lower
    fpr95_tolerance: float = 0.01  # near/far fpr95 may be at most this much higher
    max_accuracy_drop: float = 0.005  # ID accuracy may drop at most this much


@dataclass
class GateResult:
    passed: bool
    failures: list[str] = field(default_factory=list)
    compared: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)


def gated_metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    """The gated numbers of an evaluation JSON, flat; sets a benchmark lacks are left out."""
    found: dict[str, float] = {}
    for name, (group, key) in GATED_METRICS.items():
        value = (evaluation.get(group) or {}).get(key)
        if value is not None:
            found[name] = float(value)
    return found


# Every evaluation measures these; the AUROC and FPR95 of near or far depend on the benchmark.
REQUIRED_METRICS = ("id_accuracy",)
# Tags two versions must share to be compared at all: the same benchmark on the same data.
COMPARABLE_TAGS = ("benchmark", "data_manifest_sha256")
SCORE_TAG = "ood_score"  # the score a version's detector decides on (its metrics measure it)


def metric_problems(metrics: dict[str, float], who: str) -> list[str]:
    """Why these metrics cannot be gated: one missing, not a number, or outside [0, 1]."""
    problems = [f"{who} has no {name} metric" for name in REQUIRED_METRICS if name not in metrics]
    if not any(name.endswith("auroc") for name in metrics):
        problems.append(f"{who} has no AUROC metric (near_auroc or far_auroc)")
    for name, value in metrics.items():
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            problems.append(f"{who}'s {name} is {value!r}, not a fraction in [0, 1]")
    return problems


def check_gate(challenger: dict[str, float], champion: dict[str, float], gate: Gate) -> GateResult:
    """Compare the challenger's metrics with the champion's; name every metric that fails.
    Fails closed: unusable metrics on either side, or a metric only one side has, fail."""
    result = GateResult(passed=True)
    result.failures += metric_problems(challenger, "the challenger")
    result.failures += metric_problems(champion, "the champion")
    for name in GATED_METRICS:
        new, old = challenger.get(name), champion.get(name)
        result.compared[name] = (new, old)
        if old is None and new is None:
            continue  # neither measured it (the benchmark lacks that group)
        if old is None:
            result.failures.append(f"{name}: the champion has no value to compare with")
            continue
        if new is None:
            result.failures.append(f"{name}: the challenger has no value (champion {old:.4f})")
            continue
        if name.endswith("auroc") and new < old - gate.auroc_tolerance:
            limit = f"tolerance {gate.auroc_tolerance}"
            result.failures.append(f"{name} {new:.4f} < champion {old:.4f} ({limit})")
        elif name.endswith("fpr95") and new > old + gate.fpr95_tolerance:
            limit = f"tolerance {gate.fpr95_tolerance}"
            result.failures.append(f"{name} {new:.4f} > champion {old:.4f} ({limit})")
        elif name == "id_accuracy" and new < old - gate.max_accuracy_drop:
            limit = f"max drop {gate.max_accuracy_drop}"
            result.failures.append(f"{name} {new:.4f} < champion {old:.4f} ({limit})")
    result.passed = not result.failures
    return result


def comparability_problems(challenger: Any, champion: Any) -> list[str]:
    """The tags (benchmark, data manifest) on which two versions differ or one lacks, and the
    score each decides on (versions from before the tag decided on the energy, ebo)."""
    problems = []
    new_score = challenger.tags.get(SCORE_TAG, "ebo")
    old_score = champion.tags.get(SCORE_TAG, "ebo")
    if new_score != old_score:
        problems.append(f"{SCORE_TAG} differs (challenger {new_score!r}, champion {old_score!r})")
    for tag in COMPARABLE_TAGS:
        new, old = challenger.tags.get(tag), champion.tags.get(tag)
        if not new or not old:
            problems.append(f"{tag}: a version has none (challenger {new!r}, champion {old!r})")
        elif new != old:
            problems.append(f"{tag} differs (challenger {new!r}, champion {old!r})")
    return problems
