"""Post-hoc OOD scores: OpenOOD's second axis beside the training method.

Head-only scores (ebo, msp, mls, gen: oaml.scores) read the logits; feature scores read the
penultimate features and are fitted once on the ID training images: KNN (Sun et al. 2022, the
k-th nearest normalised training feature, faiss), MDS (Lee et al. 2018, class Gaussians with a
tied covariance), RMDS (Ren et al. 2021, MDS relative to one class-agnostic Gaussian) and ViM
(Wang et al. 2022, the feature's norm off the principal subspace against the energy). Every score
is a confidence: higher means more in-distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from oaml.registry import Registry
from oaml.scores import SCORES


@dataclass(frozen=True)
class Outputs:
    """What a model gives for a set of images: logits, labels and (where asked) features."""

    logits: np.ndarray  # (N, classes) float32
    labels: np.ndarray  # (N,)
    features: np.ndarray | None = None  # (N, D) float32
    # An exported detector's own confidence for the score it serves (its `score` output).
    served: np.ndarray | None = None


@dataclass(frozen=True)
class Head:
    """The final linear classifier: logits = features @ weight.T + bias."""

    weight: np.ndarray  # (classes, D)
    bias: np.ndarray  # (classes,)

    @classmethod
    def of(cls, model: torch.nn.Module) -> Head | None:
        """The model's `classifier` where it is a linear layer with a bias (what ViM needs)."""
        classifier = getattr(model, "classifier", None)
        if not isinstance(classifier, torch.nn.Linear) or classifier.bias is None:
            return None
        weight, bias = classifier.weight.detach().cpu(), classifier.bias.detach().cpu()
        return cls(weight.double().numpy(), bias.double().numpy())


@dataclass(frozen=True)
class ScoreSettings:
    temperature: float = 1.0
    knn_k: int = 50  # OpenOOD's CIFAR setting (1000 for ImageNet-1k)
    vim_dim: int | None = None  # principal subspace; None: half the feature dimension


class Postprocessor:
    """`fit` once on the ID training outputs (feature scores), then score any outputs."""

    needs_features: ClassVar[bool] = False

    def __init__(self, settings: ScoreSettings) -> None:
        self.settings = settings

    def fit(self, train: Outputs, head: Head) -> None:
        """Nothing to fit for head-only scores."""

    def __call__(self, out: Outputs) -> np.ndarray:
        raise NotImplementedError


POSTPROCESSORS: Registry[type[Postprocessor]] = Registry("score")


def _logit_score(name: str) -> type[Postprocessor]:
    class LogitScore(Postprocessor):
        __doc__ = SCORES.get(name).__doc__

        def __call__(self, out: Outputs) -> np.ndarray:
            logits = torch.from_numpy(np.ascontiguousarray(out.logits, np.float32))
            return SCORES.get(name)(logits, self.settings.temperature).numpy().astype(np.float64)

    LogitScore.__name__ = f"{name.upper()}Score"
    return LogitScore


for _name in SCORES:
    POSTPROCESSORS.register(_name)(_logit_score(_name))


def _normalised(features: np.ndarray) -> np.ndarray:
    features = np.ascontiguousarray(features, dtype=np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


@POSTPROCESSORS.register("knn")
class KNNScore(Postprocessor):
    """Minus the squared distance to the k-th nearest ID training feature, all L2-normalised."""

    needs_features = True

    def fit(self, train: Outputs, head: Head) -> None:
        import faiss

        self.bank = bank = _normalised(train.features)
        self.index = faiss.IndexFlatL2(bank.shape[1])
        self.index.add(bank)
        self.k = max(1, min(self.settings.knn_k, len(bank)))

    def __call__(self, out: Outputs) -> np.ndarray:
        distances, _ = self.index.search(_normalised(out.features), self.k)
        return -distances[:, -1].astype(np.float64)


def _precision(centered: np.ndarray) -> np.ndarray:
    covariance = centered.T @ centered / len(centered)
    return np.linalg.pinv(covariance, hermitian=True)


def _mahalanobis(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    delta = x - mean
    return np.einsum("nd,de,ne->n", delta, precision, delta)


@POSTPROCESSORS.register("mds")
class MDSScore(Postprocessor):
    """Minus the smallest Mahalanobis distance to a class mean (one tied covariance)."""

    needs_features = True

    def fit(self, train: Outputs, head: Head) -> None:
        features = np.asarray(train.features, dtype=np.float64)
        classes = np.unique(train.labels)
        self.means = np.stack([features[train.labels == c].mean(0) for c in classes])
        index = np.searchsorted(classes, train.labels)
        self.precision = _precision(features - self.means[index])

    def class_distances(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        return np.stack([_mahalanobis(x, m, self.precision) for m in self.means], axis=1)

    def __call__(self, out: Outputs) -> np.ndarray:
        return -self.class_distances(out.features).min(axis=1)


@POSTPROCESSORS.register("rmds")
class RMDSScore(MDSScore):
    """MDS relative to a class-agnostic Gaussian of all ID features: the largest of
    -(class distance - background distance)."""

    def fit(self, train: Outputs, head: Head) -> None:
        super().fit(train, head)
        features = np.asarray(train.features, dtype=np.float64)
        self.background_mean = features.mean(0)
        self.background_precision = _precision(features - self.background_mean)

    def __call__(self, out: Outputs) -> np.ndarray:
        x = np.asarray(out.features, dtype=np.float64)
        background = _mahalanobis(x, self.background_mean, self.background_precision)
        return -self.class_distances(x).min(axis=1) + background


@POSTPROCESSORS.register("vim")
class ViMScore(Postprocessor):
    """Energy minus alpha times the norm of the feature off the principal subspace, both
    measured from the origin u = -pinv(W) b the classifier implies; alpha matches the two on
    the training set (mean max logit / mean residual norm)."""

    needs_features = True

    def fit(self, train: Outputs, head: Head) -> None:
        weight, bias = np.asarray(head.weight, np.float64), np.asarray(head.bias, np.float64)
        self.origin = -np.linalg.pinv(weight) @ bias
        centered = np.asarray(train.features, dtype=np.float64) - self.origin
        dim = self.settings.vim_dim or centered.shape[1] // 2
        if not 0 < dim < centered.shape[1]:
            raise ValueError(
                f"evaluation.vim_dim={dim} must lie between 1 and {centered.shape[1] - 1} "
                "(the feature dimension minus one)"
            )
        values, vectors = np.linalg.eigh(centered.T @ centered / len(centered))
        self.residual = vectors[:, np.argsort(values)[::-1][dim:]]
        norms = np.linalg.norm(centered @ self.residual, axis=1)
        self.alpha = float(train.logits.max(axis=1).mean() / max(norms.mean(), 1e-12))

    def __call__(self, out: Outputs) -> np.ndarray:
        centered = np.asarray(out.features, dtype=np.float64) - self.origin
        virtual = self.alpha * np.linalg.norm(centered @ self.residual, axis=1)
        logits = torch.from_numpy(np.asarray(out.logits, np.float64))
        return (torch.logsumexp(logits, dim=1).numpy() - virtual).astype(np.float64)


def create_postprocessor(name: str, settings: ScoreSettings | None = None) -> Postprocessor:
    """A registered score by name (unknown names are an error that lists the known ones)."""
    return POSTPROCESSORS.get(name)(settings or ScoreSettings())


def score_names() -> list[str]:
    return POSTPROCESSORS.names()
