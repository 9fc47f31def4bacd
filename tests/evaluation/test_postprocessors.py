"""Every post-hoc score against a case computed by hand (higher = more in-distribution)."""

import math

import numpy as np
import pytest

from oaml.evaluation.postprocessors import (
    Head,
    Outputs,
    ScoreSettings,
    create_postprocessor,
    score_names,
)

IDENTITY_HEAD = Head(np.eye(2), np.zeros(2))


def _score(name, out, train=None, head=IDENTITY_HEAD, **settings):
    post = create_postprocessor(name, ScoreSettings(**settings))
    if train is not None:
        post.fit(train, head)
    return post(out)


def test_every_openood_score_is_registered():
    assert {"ebo", "msp", "mls", "gen", "knn", "rmds", "vim", "mds"} <= set(score_names())
    with pytest.raises(KeyError, match="known: "):
        create_postprocessor("odin")


def test_head_scores():
    logits = np.array([[0.0, math.log(3.0)]])
    out = Outputs(logits, np.zeros(1))
    assert _score("mls", out)[0] == pytest.approx(math.log(3.0))
    assert _score("msp", out)[0] == pytest.approx(0.75)
    assert _score("ebo", out)[0] == pytest.approx(math.log(4.0))
    # GEN with p = (0.25, 0.75): -(0.25^0.1 0.75^0.1 + 0.75^0.1 0.25^0.1).
    assert _score("gen", out)[0] == pytest.approx(-2 * 0.1875**0.1, rel=1e-6)
    # A temperature divides the logits first.
    assert _score("mls", out, temperature=2.0)[0] == pytest.approx(math.log(3.0) / 2)


def test_knn_is_minus_the_squared_distance_to_the_kth_normalised_neighbour():
    angles = np.radians([0.0, 90.0, 180.0])
    train = Outputs(
        np.zeros((3, 2)), np.zeros(3), 5 * np.stack([np.cos(angles), np.sin(angles)], 1)
    )
    probe = np.radians(10.0)
    out = Outputs(np.zeros((1, 2)), np.zeros(1), 0.3 * np.array([[np.cos(probe), np.sin(probe)]]))
    nearest = 2 - 2 * np.cos(probe)  # chord to 0 degrees on the unit circle, squared
    second = 2 - 2 * np.cos(np.radians(80.0))  # to 90 degrees
    assert _score("knn", out, train, knn_k=1)[0] == pytest.approx(-nearest, rel=1e-5)
    assert _score("knn", out, train, knn_k=2)[0] == pytest.approx(-second, rel=1e-5)


# Two classes of four points, means (0, 0) and (4, 0); the tied covariance is diag(0.5, 0.5).
CROSS = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.float64)
GAUSSIANS = Outputs(
    np.zeros((8, 2)),
    np.array([0] * 4 + [1] * 4),
    np.concatenate([CROSS, CROSS + np.array([4.0, 0.0])]),
)
PROBE = Outputs(np.zeros((1, 2)), np.zeros(1), np.array([[1.0, 1.0]]))


def test_mds_is_minus_the_nearest_class_mahalanobis_distance():
    # Precision 2I: to (0, 0) 2 * (1 + 1) = 4, to (4, 0) 2 * (9 + 1) = 20.
    assert _score("mds", PROBE, GAUSSIANS)[0] == pytest.approx(-4.0)


def test_rmds_subtracts_the_background_distance():
    # Background mean (2, 0), covariance diag(4.5, 0.5): (1, 1) is 1/4.5 + 1/0.5 = 20/9 away.
    assert _score("rmds", PROBE, GAUSSIANS)[0] == pytest.approx(-4.0 + 20 / 9)


def test_vim_is_energy_minus_the_scaled_residual_norm():
    # Origin 0 (b = 0); principal axis x (variance 2 vs 0.5), residual axis y. Train max logits
    # 2, 0, 1, 0 (mean 0.75), residual norms 0, 0, 1, 1 (mean 0.5): alpha = 1.5.
    features = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    train = Outputs(features.copy(), np.array([0, 1, 0, 1]), features)
    probe = np.array([[1.0, 2.0]])
    out = Outputs(probe.copy(), np.zeros(1), probe)
    expected = math.log(math.exp(1.0) + math.exp(2.0)) - 1.5 * 2.0
    assert _score("vim", out, train, vim_dim=1)[0] == pytest.approx(expected)
    with pytest.raises(ValueError, match="vim_dim"):
        _score("vim", out, train, vim_dim=2)
