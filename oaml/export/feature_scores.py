"""The feature scores (knn, mds, rmds, vim) as graph modules: the fitted post-processor's
constants become constants of the exported detector.

The fit is evaluation's own (oaml.evaluation.postprocessors, on the same ID training images
`oaml evaluate` fits on), so the served confidence is the evaluated one; only the arithmetic is
restated in torch ops ONNX can hold (MatMul, TopK, ReduceSum), in float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oaml.contract import lineage_data_root
from oaml.evaluation.postprocessors import (
    Head,
    KNNScore,
    MDSScore,
    Outputs,
    RMDSScore,
    ScoreSettings,
    ViMScore,
    create_postprocessor,
)

FEATURE_SCORES = ("knn", "mds", "rmds", "vim")


class FeatureScoreError(ValueError):
    """A feature score cannot be fitted for this checkpoint (no data, no linear head)."""


def _const(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def _whitening(precision: np.ndarray) -> np.ndarray:
    """W with W W^T = precision (a pseudo-inverse, so positive semi-definite): then
    (x - m) P (x - m)^T = |(x - m) W|^2, one MatMul and a sum of squares in the graph."""
    values, vectors = np.linalg.eigh(precision)
    keep = values > values.max() * 1e-12
    return vectors[:, keep] * np.sqrt(values[keep])


class KNNConfidence(nn.Module):
    """Minus the squared distance to the k-th nearest bank feature, both unit length
    (|a - b|^2 = 2 - 2 a.b): MatMul + TopK against the normalised ID training features."""

    def __init__(self, fitted: KNNScore) -> None:
        super().__init__()
        self.register_buffer("bank", _const(fitted.bank), persistent=False)
        self.k = fitted.k

    def forward(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        similarity = F.normalize(features, dim=1) @ self.bank.T
        return 2.0 * similarity.topk(self.k, dim=1).values[:, -1] - 2.0

    def settings(self) -> dict[str, Any]:
        return {"k": self.k, "bank": len(self.bank)}


class MahalanobisConfidence(nn.Module):
    """MDS: minus the smallest class Mahalanobis distance (tied covariance). RMDS: plus the
    distance to the class-agnostic Gaussian of all ID features."""

    def __init__(self, fitted: MDSScore) -> None:
        super().__init__()
        whitening = _whitening(fitted.precision)
        self.register_buffer("whitening", _const(whitening), persistent=False)
        self.register_buffer("means", _const(fitted.means @ whitening), persistent=False)
        self.relative = isinstance(fitted, RMDSScore)
        if self.relative:
            background = _whitening(fitted.background_precision)
            self.register_buffer("background", _const(background), persistent=False)
            centre = fitted.background_mean @ background
            self.register_buffer("background_mean", _const(centre), persistent=False)

    def forward(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        delta = (features @ self.whitening).unsqueeze(1) - self.means.unsqueeze(0)
        confidence = -(delta * delta).sum(dim=2).min(dim=1).values
        if self.relative:
            off = features @ self.background - self.background_mean
            confidence = confidence + (off * off).sum(dim=1)
        return confidence

    def settings(self) -> dict[str, Any]:
        return {"classes": len(self.means), "rank": self.whitening.shape[1]}


class ViMConfidence(nn.Module):
    """The energy at T = 1 minus alpha times the norm of the feature off the principal subspace,
    measured from the origin the classifier implies."""

    def __init__(self, fitted: ViMScore) -> None:
        super().__init__()
        self.register_buffer("origin", _const(fitted.origin), persistent=False)
        self.register_buffer("residual", _const(fitted.residual), persistent=False)
        self.alpha = float(fitted.alpha)

    def forward(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        off = (features - self.origin) @ self.residual
        return torch.logsumexp(logits, dim=1) - self.alpha * off.norm(dim=1)

    def settings(self) -> dict[str, Any]:
        dim = self.residual.shape[0] - self.residual.shape[1]
        return {"principal_dim": dim, "alpha": self.alpha}


_MODULES: dict[str, type[nn.Module]] = {
    "knn": KNNConfidence,
    "mds": MahalanobisConfidence,
    "rmds": MahalanobisConfidence,
    "vim": ViMConfidence,
}


def fit_feature_score(
    score: str,
    model: nn.Module,
    spec,
    payload: dict[str, Any],
    root: Path | None,
    settings: ScoreSettings,
    fit_images: int | None = None,
) -> nn.Module:
    """The `score` module fitted on the ID training images (a class-stratified subset of
    `fit_images`, all when None): what `oaml evaluate --score <score>` fits on."""
    from torch.utils.data import DataLoader

    from oaml.data.benchmarks import get_benchmark
    from oaml.data.datasets import image_set_dataset
    from oaml.models.predict import predict_with_features

    lineage = payload.get("lineage", {})
    root = lineage_data_root(lineage, root)
    if root is None:
        raise FeatureScoreError(
            f"the {score} score is fitted on the ID training images: pass --data-root"
        )
    head = Head.of(model)
    if score == "vim" and head is None:
        raise FeatureScoreError("the vim score needs a linear classifier head with a bias")
    train = get_benchmark(lineage["benchmark"], root).train
    dataset = image_set_dataset(train, root, spec, subset=fit_images, seed=0, decoded=True)
    loader = DataLoader(dataset, batch_size=256)
    fitted = create_postprocessor(score, settings)
    outputs = predict_with_features(model, loader, torch.device("cpu"), desc=f"{score} fit")
    fitted.fit(Outputs(*outputs), head)
    return _MODULES[score](fitted)
