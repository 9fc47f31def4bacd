"""OOD detection metrics, in OpenOOD v1.5's conventions plus the deployment-side FPR.

Inputs are confidences (higher = more in-distribution) for ID and OOD samples.
- auroc: area under the ROC curve (the same whichever class is taken as positive).
- aupr_in: area under precision-recall with ID as positive; aupr_out: with OOD as positive
  (both as OpenOOD computes them: trapezoidal area over the precision-recall curve).
- fpr95: the fraction of OOD taken as ID at the threshold that keeps 95% of ID (what a served
  detector calibrated on ID data does).
- fpr95_openood: OpenOOD's "FPR@95" with OOD as positive: the fraction of ID flagged as OOD at
  the threshold that catches 95% of OOD.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from oaml.contract import ID_TPR, energy_threshold

RECALL = ID_TPR


def _labels_scores(id_conf: np.ndarray, ood_conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    id_conf, ood_conf = np.asarray(id_conf, np.float64), np.asarray(ood_conf, np.float64)
    if id_conf.size == 0 or ood_conf.size == 0:
        raise ValueError("OOD metrics need at least one ID and one OOD sample")
    if not (np.isfinite(id_conf).all() and np.isfinite(ood_conf).all()):
        raise ValueError("confidences contain NaN or infinity")
    labels = np.concatenate([np.ones(id_conf.size), np.zeros(ood_conf.size)])
    return labels, np.concatenate([id_conf, ood_conf])


def fpr_at_recall(positive: np.ndarray, negative: np.ndarray, recall: float = RECALL) -> float:
    """Fraction of negatives scoring at or above the threshold that keeps `recall` of positives.

    The threshold is threshold_at_recall's, the largest t with mean(positive >= t) >= recall (also
    roc_curve's first point reaching that TPR), so fpr95 is measured where a served detector cuts.
    """
    _labels_scores(positive, negative)  # the same input checks as the other metrics
    threshold = threshold_at_recall(positive, recall)
    return float(np.mean(np.asarray(negative, np.float64) >= threshold))


def threshold_at_recall(id_conf: np.ndarray, recall: float = RECALL) -> float:
    """The confidence threshold that keeps `recall` of ID samples (score >= threshold is ID).

    The contract's energy threshold with the sign flipped (confidence = -energy), so evaluation
    and the served detector cannot disagree on where 95% ID recall lies.
    """
    return -energy_threshold(-np.asarray(id_conf, np.float64), recall)


def ood_metrics(id_conf: np.ndarray, ood_conf: np.ndarray) -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out, fpr95 (95% ID kept) and fpr95_openood (95% OOD caught)."""
    labels, scores = _labels_scores(id_conf, ood_conf)
    precision_in, recall_in, _ = skm.precision_recall_curve(labels, scores)
    precision_out, recall_out, _ = skm.precision_recall_curve(1 - labels, -scores)
    return {
        "auroc": float(skm.roc_auc_score(labels, scores)),
        "aupr_in": float(skm.auc(recall_in, precision_in)),
        "aupr_out": float(skm.auc(recall_out, precision_out)),
        "fpr95": fpr_at_recall(id_conf, ood_conf),
        "fpr95_openood": fpr_at_recall(-np.asarray(ood_conf), -np.asarray(id_conf)),
    }


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return float((predictions == labels).mean()) if labels.size else float("nan")


def roc_points(confidences: dict[str, np.ndarray], points: int = 200) -> dict[str, list[float]]:
    """The ROC of ID (positive) against every OOD set pooled, thinned to about `points` (what
    Kubeflow's UI plots)."""
    id_conf = confidences["id"]
    ood = np.concatenate([c for name, c in confidences.items() if name != "id"])
    labels = np.concatenate([np.ones_like(id_conf), np.zeros_like(ood)])
    fpr, tpr, thresholds = skm.roc_curve(labels, np.concatenate([id_conf, ood]))
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(points, len(fpr))).round().astype(int))
    # Kubeflow rejects infinities; the first threshold is +inf by sklearn's convention.
    finite = np.nan_to_num(thresholds[keep], posinf=float(np.max(id_conf)) + 1.0)
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist(), "threshold": finite.tolist()}
