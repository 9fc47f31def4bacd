"""DreamOOD's k-NN boundary sampling of outlier embeddings (Du et al., NeurIPS 2023).

Per class, on L2-normalised ID features: the `select` points farthest from their K-th neighbour
are the class boundary; around boundary points, Gaussian candidates x + sigma * N(0, I) are drawn
and the `keep` candidates farthest (K-th neighbour distance) from the class are kept, until
`n_per_class` outliers exist; they are finally rescaled to `scale` (DreamOOD: the norm of the
class token embedding). Nearest-neighbour search: faiss's GPU index where one is available,
brute force (BLAS matmul + partition) on a CPU.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oaml.io import atomic_write, atomic_write_json


@dataclass(frozen=True)
class KnnConfig:
    """DreamOOD's defaults: K=300, select=50, sigma=0.07, 1500 candidates, keep 2."""

    k: int = 300
    select: int = 50
    sigma: float = 0.07
    candidates: int = 1500
    keep: int = 2
    # Boundary points used per round (DreamOOD's pic_nums); None = all `select` of them.
    points_per_round: int | None = None
    seed: int = 0


def normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32)."""
    features = np.asarray(features, np.float32)
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


class _Index:
    """K-th nearest neighbour distances against one class's features (faiss, GPU if present)."""

    def __init__(self, features: np.ndarray, use_gpu: bool | None = None) -> None:
        import faiss

        index = faiss.IndexFlatL2(features.shape[1])
        gpu = use_gpu is not False and hasattr(faiss, "StandardGpuResources")
        if gpu and faiss.get_num_gpus() > 0:
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        index.add(np.ascontiguousarray(features, dtype=np.float32))
        self.index = index

    def kth_distance(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Euclidean distance from each query to its k-th nearest indexed point."""
        distances, _ = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return np.sqrt(np.maximum(distances[:, k - 1], 0.0))


class _NumpyIndex:
    """The same search by brute force in NumPy (BLAS matmul + partition): the baseline that
    `oaml bench knn` measures faiss against."""

    def __init__(self, features: np.ndarray, use_gpu: bool | None = None) -> None:
        self.points = np.ascontiguousarray(features, dtype=np.float32)
        self.sq_norms = (self.points**2).sum(axis=1)

    def kth_distance(self, queries: np.ndarray, k: int) -> np.ndarray:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        chunk = max(1, (1 << 25) // len(self.points))  # ~128 MiB of distances at a time
        out = np.empty(len(queries), np.float32)
        for start in range(0, len(queries), chunk):
            q = queries[start : start + chunk]
            # |q|^2 + |p|^2 - 2 q.p, in place: the temporaries cost more than the matmul.
            d2 = q @ self.points.T
            d2 *= -2.0
            d2 += self.sq_norms[None, :]
            d2 += np.einsum("ij,ij->i", q, q)[:, None]
            out[start : start + chunk] = np.partition(d2, k - 1, axis=1)[:, k - 1]
        return np.sqrt(np.maximum(out, 0.0))


INDEXES = {"faiss": _Index, "numpy": _NumpyIndex}


def _auto_index(features: np.ndarray, use_gpu: bool | None = None) -> _Index | _NumpyIndex:
    """faiss on a GPU; brute force on a CPU, where it is faster for DreamOOD's per-class sizes
    (K = 300 makes faiss's CPU heap selection the bottleneck: `oaml bench knn`)."""
    if use_gpu is not False:
        import faiss

        if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
            return _Index(features, use_gpu)
    return _NumpyIndex(features)


INDEXES["auto"] = _auto_index


def boundary_indices(index: _Index, features: np.ndarray, cfg: KnnConfig) -> np.ndarray:
    """Indices of the `select` points with the largest distance to their K-th neighbour.

    Each point is in the index itself, so its K-th neighbour is the (K+1)-th hit.
    """
    k = min(cfg.k + 1, features.shape[0])
    distances = index.kth_distance(features, k)
    return np.argsort(-distances, kind="stable")[: cfg.select]


def sample_class(
    features: np.ndarray,
    n: int,
    cfg: KnnConfig,
    rng: np.random.Generator,
    use_gpu=None,
    backend: str = "auto",
) -> np.ndarray:
    """`n` outlier embeddings for one class's normalised features (N, D) -> (n, D)."""
    index = INDEXES[backend](features, use_gpu)
    boundary = boundary_indices(index, features, cfg)
    k = min(cfg.k, features.shape[0])
    per_round = cfg.points_per_round or len(boundary)
    found: list[np.ndarray] = []
    total = 0
    while total < n:
        chosen = rng.choice(boundary, size=min(per_round, len(boundary)), replace=False)
        noise = rng.standard_normal((len(chosen), cfg.candidates, features.shape[1]), np.float32)
        noise *= cfg.sigma
        candidates = features[chosen][:, None, :] + noise
        flat = candidates.reshape(-1, features.shape[1])
        distances = index.kth_distance(flat, k).reshape(len(chosen), cfg.candidates)
        best = np.argsort(-distances, axis=1, kind="stable")[:, : cfg.keep]
        picked = np.take_along_axis(candidates, best[:, :, None], axis=1).reshape(-1, flat.shape[1])
        found.append(picked)
        total += len(picked)
    return np.concatenate(found)[:n]


def sample_outliers(
    features: np.ndarray,
    n_per_class: int,
    cfg: KnnConfig = KnnConfig(),
    scale: np.ndarray | float | None = None,
    use_gpu: bool | None = None,
    backend: str = "auto",
) -> np.ndarray:
    """Outlier embeddings for every class: features (C, N, D) -> (C, n_per_class, D) float32.

    `scale` (per class or one value) rescales each outlier to that norm; None keeps unit norm.
    `backend`: "faiss" (GPU index when present), "numpy" (brute force) or "auto" (faiss on a
    GPU, brute force on a CPU).
    """
    if backend not in INDEXES:
        raise ValueError(f"unknown k-NN backend {backend!r}; available: {sorted(INDEXES)}")
    features = np.asarray(features)
    if features.ndim != 3:
        raise ValueError(f"features must be (classes, samples, dim), got shape {features.shape}")
    if features.shape[1] < 2:
        raise ValueError("k-NN sampling needs at least 2 features per class")
    rng = np.random.default_rng(cfg.seed)
    normed = normalize(features)
    outliers = np.stack(
        [
            sample_class(normed[c], n_per_class, cfg, rng, use_gpu, backend)
            for c in range(len(normed))
        ]
    ).astype(np.float32)
    if scale is not None:
        scales = np.broadcast_to(
            np.asarray(scale, np.float32).reshape(-1, 1, 1), (len(normed), 1, 1)
        )
        outliers = normalize(outliers) * scales
    return outliers


def save_outliers(
    path: str | Path, outliers: np.ndarray, features: np.ndarray, cfg: KnnConfig, **extra: Any
) -> Path:
    """Write `outliers` as .npy and a JSON sidecar with the parameters and input hash."""
    path = Path(path)
    atomic_write(path, lambda fh: np.save(fh, outliers))
    meta = {
        "shape": list(outliers.shape),
        "params": asdict(cfg),
        "features_sha256": hashlib.sha256(np.ascontiguousarray(features).tobytes()).hexdigest(),
        "outliers_sha256": hashlib.sha256(np.ascontiguousarray(outliers).tobytes()).hexdigest(),
        **extra,
    }
    atomic_write_json(path.with_suffix(".json"), meta)
    return path
