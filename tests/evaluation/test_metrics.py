"""Metrics on fixed arrays, checked against values computed by hand."""

import numpy as np
import pytest

from oaml.evaluation.metrics import fpr_at_recall, ood_metrics, threshold_at_recall


def _pairwise_auroc(id_conf, ood_conf):
    """AUROC by counting ID/OOD pairs (ties count half): the definition, by hand."""
    wins = sum((i > o) + 0.5 * (i == o) for i in id_conf for o in ood_conf)
    return wins / (len(id_conf) * len(ood_conf))


def test_auroc_matches_pair_counting_with_ties():
    id_conf = np.array([0.9, 0.8, 0.8, 0.4, 0.3])
    ood_conf = np.array([0.8, 0.5, 0.2, 0.1])
    assert ood_metrics(id_conf, ood_conf)["auroc"] == pytest.approx(
        _pairwise_auroc(id_conf, ood_conf)
    )


def test_perfect_and_inverted_separation():
    perfect = ood_metrics(np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0]))
    assert perfect["auroc"] == 1.0 and perfect["fpr95"] == 0.0 and perfect["fpr95_openood"] == 0.0
    assert perfect["aupr_in"] == pytest.approx(1.0) and perfect["aupr_out"] == pytest.approx(1.0)
    inverted = ood_metrics(np.array([0.0, 1.0]), np.array([3.0, 4.0, 5.0]))
    assert inverted["auroc"] == 0.0 and inverted["fpr95"] == 1.0


def test_fpr95_by_hand():
    # 20 ID scores 1..20; keeping 95% (19 of 20) puts the threshold at 2.
    id_conf = np.arange(1, 21, dtype=float)
    assert threshold_at_recall(id_conf) == 2.0
    # OOD at or above 2 are accepted: 2.0, 5.0, 30.0 of these 5 -> 3/5.
    ood_conf = np.array([0.5, 1.5, 2.0, 5.0, 30.0])
    assert fpr_at_recall(id_conf, ood_conf) == pytest.approx(3 / 5)
    assert ood_metrics(id_conf, ood_conf)["fpr95"] == pytest.approx(3 / 5)


def test_fpr95_openood_by_hand():
    # OOD is positive: catching 95% of 20 OOD (19) needs threshold "conf <= 19" on OOD 1..20;
    # ID samples at or below 19 are flagged: 10 and 19 of (10, 19, 25, 40) -> 2/4.
    ood_conf = np.arange(1, 21, dtype=float)
    id_conf = np.array([10.0, 19.0, 25.0, 40.0])
    assert ood_metrics(id_conf, ood_conf)["fpr95_openood"] == pytest.approx(2 / 4)


def test_aupr_in_and_out_by_hand():
    # ID: 0.9, 0.4; OOD: 0.6. Ranked by confidence: ID, OOD, ID.
    # AUPR-In (trapezoid over PR points (0,1), (.5,1), (.5,.5), (1,2/3)):
    #   0.5*1 + 0 + 0.5*(0.5+2/3)/2 = 0.7916...
    m = ood_metrics(np.array([0.9, 0.4]), np.array([0.6]))
    assert m["aupr_in"] == pytest.approx(0.5 + 0.5 * (0.5 + 2 / 3) / 2)
    # AUPR-Out (OOD positive, ranked by -conf: ID(0.4), OOD(0.6), ID(0.9)):
    # PR points (0,1), (0,0), (1,0.5), (1,1/3): area 0 + 1*(0+0.5)/2 = 0.25.
    assert m["aupr_out"] == pytest.approx(0.25)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="at least one ID and one OOD"):
        ood_metrics(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        ood_metrics(np.array([np.nan]), np.array([1.0]))
