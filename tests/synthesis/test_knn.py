"""The faiss k-NN sampler against a brute-force NumPy reference of DreamOOD's procedure."""

import json

import numpy as np
import pytest

from oaml.synthesis.knn import (
    KnnConfig,
    _Index,
    boundary_indices,
    normalize,
    sample_outliers,
    save_outliers,
)

CFG = KnnConfig(k=5, select=4, sigma=0.1, candidates=30, keep=2, seed=3)


def _kth(points: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    distances = np.sqrt(((queries[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    return np.sort(distances, axis=1)[:, k - 1]


def _reference(features: np.ndarray, n: int, cfg: KnnConfig) -> tuple[list, np.ndarray]:
    """DreamOOD's sampling written plainly with pairwise distances (same random stream)."""
    rng = np.random.default_rng(cfg.seed)
    normed = normalize(features)
    boundaries, out = [], []
    for points in normed:
        boundary = np.argsort(-_kth(points, points, cfg.k + 1), kind="stable")[: cfg.select]
        boundaries.append(boundary)
        found = []
        while sum(len(f) for f in found) < n:
            chosen = rng.choice(boundary, size=len(boundary), replace=False)
            noise = rng.standard_normal((len(chosen), cfg.candidates, points.shape[1]), np.float32)
            for row, idx in enumerate(chosen):
                cands = points[idx] + cfg.sigma * noise[row]
                order = np.argsort(-_kth(points, cands, cfg.k), kind="stable")[: cfg.keep]
                found.append(cands[order])
        out.append(np.concatenate(found)[:n])
    return boundaries, np.stack(out)


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 1, 16)) * 3
    return (centres + rng.standard_normal((3, 40, 16))).astype(np.float32)


def test_same_boundary_points_as_brute_force(features):
    boundaries, _ = _reference(features, 10, CFG)
    normed = normalize(features)
    for c in range(3):
        found = boundary_indices(_Index(normed[c], use_gpu=False), normed[c], CFG)
        assert found.tolist() == boundaries[c].tolist()


@pytest.mark.parametrize("backend", ["faiss", "numpy", "auto"])
def test_same_outliers_as_brute_force(features, backend):
    _, expected = _reference(features, 10, CFG)
    outliers = sample_outliers(features, 10, CFG, use_gpu=False, backend=backend)
    assert outliers.shape == (3, 10, 16) and outliers.dtype == np.float32
    np.testing.assert_allclose(outliers, expected, atol=1e-6)


def test_outliers_lie_farther_from_the_class_than_its_points(features):
    normed = normalize(features)
    outliers = sample_outliers(features, 20, CFG, use_gpu=False)
    for c in range(3):
        inside = _kth(normed[c], normed[c], CFG.k + 1).mean()
        assert _kth(normed[c], outliers[c], CFG.k).mean() > inside


def test_rescale_to_class_norms_and_save(tmp_path, features):
    scale = np.array([1.0, 2.0, 3.0])
    outliers = sample_outliers(features, 4, CFG, scale=scale, use_gpu=False)
    np.testing.assert_allclose(
        np.linalg.norm(outliers, axis=-1), np.repeat(scale[:, None], 4, 1), rtol=1e-5
    )
    path = save_outliers(tmp_path / "knn.npy", outliers, features, CFG)
    assert np.array_equal(np.load(path), outliers)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["params"]["k"] == 5 and meta["shape"] == [3, 4, 16]
    assert len(meta["features_sha256"]) == 64


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="classes, samples, dim"):
        sample_outliers(np.zeros((4, 8)), 2)
