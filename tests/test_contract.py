"""The detector contract: calibration, the OOD decision and metadata, checked by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oaml.contract import (
    FORMAT,
    Calibration,
    DetectorError,
    Meta,
    below,
    calibration_props,
    energy_threshold,
    is_ood,
    read_metadata,
    write_metadata,
)


def test_threshold_keeps_19_of_20_energies_by_hand():
    # Energies 0.0, 0.5, ..., 9.5 (shuffled): keeping 95% = 19 of 20 means the 19th lowest, 9.0.
    energies = np.random.default_rng(0).permutation(np.arange(20) * 0.5)
    calibration = Calibration.fit(energies, temperature=2.0)
    assert calibration.energy_threshold == 9.0
    assert calibration.images == 20 and calibration.temperature == 2.0
    assert calibration.id_tpr == 0.95 and calibration.split == "val"
    kept = ~is_ood(energies, calibration.energy_threshold)
    assert kept.mean() == 0.95
    assert energies[~kept].tolist() == [9.5]


def test_threshold_with_ties_and_inexact_products():
    # Ten 1s and ten 2s: the 19th lowest is a 2, so every image is kept.
    assert energy_threshold(np.array([1.0] * 10 + [2.0] * 10)) == 2.0
    # 0.7 * 10 is 7.000000000000001 in floats; keeping 70% of 10 still means the 7th lowest.
    assert energy_threshold(np.arange(1.0, 11.0), id_tpr=0.7) == 7.0
    assert energy_threshold(np.array([4.0])) == 4.0
    with pytest.raises(ValueError, match="at least one"):
        energy_threshold(np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        energy_threshold(np.array([1.0, np.nan]))


def test_is_ood_on_both_sides_of_the_threshold():
    energy = np.array([-3.0, 1.999, 2.0, 2.001, 7.0], np.float32)
    assert is_ood(energy, 2.0).tolist() == [False, False, False, True, True]
    assert is_ood(energy, 2.0).dtype == np.bool_


def test_a_nan_score_is_ood_whatever_the_threshold():
    """Fail closed: a score that cannot be compared is never taken as in-distribution."""
    confidence = np.array([np.nan, 5.0, -5.0], np.float32)
    assert below(confidence, 0.0).tolist() == [True, False, True]
    assert is_ood(-confidence, 0.0).tolist() == [True, False, True]


def test_fpr95_threshold_is_the_contract_threshold():
    from oaml.evaluation.metrics import threshold_at_recall

    rng = np.random.default_rng(1)
    for n in (1, 7, 20, 101, 1000):
        conf = np.round(rng.normal(size=n), 1)  # rounded: ties at the boundary too
        for recall in (0.5, 0.7, 0.95, 1.0):
            assert energy_threshold(-conf, recall) == -threshold_at_recall(conf, recall)


def test_dict_round_trip_and_legacy_confidence_dict():
    calibration = Calibration(energy_threshold=-4.25, temperature=1.5, images=100)
    assert Calibration.from_dict(calibration.to_dict()) == calibration
    # Checkpoints before the contract stored the threshold as a confidence (= -energy).
    legacy = {"score": "ebo", "temperature": 1.0, "id_tpr": 0.95, "threshold": 3.5, "split": "val"}
    assert Calibration.from_dict(legacy) == Calibration(energy_threshold=-3.5)
    # int8 files before the contract: no temperature, an image count.
    old_int8 = {"id_tpr": 0.95, "split": "val", "score": "ebo", "threshold": -2.0, "images": 9}
    assert Calibration.from_dict(old_int8).energy_threshold == 2.0
    with pytest.raises(ValueError, match="energy_threshold"):
        Calibration.from_dict({"temperature": 1.0})


def _metadata(calibration: Calibration | None) -> dict[str, str]:
    return write_metadata(
        version="0.0.0",
        arch="resnet18_32x32",
        class_names=["a", "b", "c"],
        input_size=28,
        channels=1,
        mean=(0.5,),
        std=(0.25,),
        temperature=1.5,
        lineage={"benchmark": "fmnist"},
        calibration=calibration,
    )


def test_metadata_write_then_read():
    calibration = Calibration(energy_threshold=-7.125, temperature=1.5, images=12)
    meta = _metadata(calibration)
    assert all(isinstance(v, str) for v in meta.values())
    assert meta[Meta.FORMAT] == FORMAT and meta[Meta.THRESHOLD] == "-7.125"
    assert json.loads(meta[Meta.CALIBRATION]) == calibration.to_dict()
    info = read_metadata(meta, "m.onnx")
    assert info.class_names == ("a", "b", "c") and info.num_classes == 3
    assert (info.input_size, info.channels, info.temperature) == (28, 1, 1.5)
    assert info.threshold == -7.125 and info.calibration == calibration
    assert info.mean == (0.5,) and info.std == (0.25,) and info.arch == "resnet18_32x32"
    assert json.loads(info.metadata[Meta.LINEAGE]) == {"benchmark": "fmnist"}
    assert calibration_props(calibration) == {
        k: meta[k] for k in (Meta.THRESHOLD, Meta.CALIBRATION)
    }


def test_metadata_without_calibration_and_broken_metadata():
    info = read_metadata(_metadata(None), "m.onnx")
    assert info.threshold is None and info.calibration is None
    with pytest.raises(ValueError, match="temperature"):
        _metadata(Calibration(energy_threshold=1.0, temperature=1.0))  # graph uses 1.5
    with pytest.raises(DetectorError, match="x.onnx is not an oaml detector"):
        read_metadata({}, "x.onnx")
    broken = {**_metadata(None), Meta.INPUT_SIZE: "big"}
    with pytest.raises(DetectorError, match="x.onnx: broken oaml metadata"):
        read_metadata(broken, "x.onnx")


def test_contract_does_not_import_torch():
    code = "import oaml.contract, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_metadata_records_the_interpolation_and_old_files_read_the_default():
    meta = _metadata(None)
    assert meta[Meta.INTERPOLATION] == "bilinear"
    assert read_metadata(meta, "m.onnx").interpolation == "bilinear"
    legacy = {k: v for k, v in meta.items() if k != Meta.INTERPOLATION}
    assert read_metadata(legacy, "old.onnx").interpolation == "bilinear"
    bicubic = write_metadata(**{**_metadata_kwargs(), "interpolation": "bicubic"})
    assert read_metadata(bicubic, "m.onnx").interpolation == "bicubic"
    with pytest.raises(ValueError, match="unknown interpolation 'area'"):
        write_metadata(**{**_metadata_kwargs(), "interpolation": "area"})
    with pytest.raises(DetectorError, match="x.onnx: metadata 'interpolation' is 'area'"):
        read_metadata({**meta, Meta.INTERPOLATION: "area"}, "x.onnx")


def _metadata_kwargs() -> dict:
    return {
        "version": "0.0.0",
        "arch": "resnet18_32x32",
        "class_names": ["a", "b", "c"],
        "input_size": 28,
        "channels": 1,
        "mean": (0.5,),
        "std": (0.25,),
        "temperature": 1.5,
        "lineage": {"benchmark": "fmnist"},
    }


def test_a_served_score_other_than_energy_decides_in_its_own_units():
    """msp: a confidence threshold (below = OOD); ebo: -energy threshold, as before."""
    from oaml.contract import below, confidence_threshold

    # 20 ID confidences 0.05, 0.10, ..., 1.00: keeping 19 of 20 puts the threshold at 0.10.
    confidences = np.arange(1, 21) / 20
    assert confidence_threshold(confidences) == pytest.approx(0.10)
    assert below(np.array([0.09, 0.10, 0.5]), 0.10).tolist() == [True, False, False]

    msp = read_metadata(
        write_metadata(**_metadata_kwargs(), score="msp", score_threshold=0.625), "m.onnx"
    )
    assert msp.score == "msp" and msp.score_threshold == 0.625
    assert msp.confidence_threshold == 0.625
    ebo = read_metadata(_metadata(Calibration(energy_threshold=-7.0, temperature=1.5)), "m.onnx")
    assert ebo.score == "ebo" and ebo.confidence_threshold == 7.0
    old = {k: v for k, v in _metadata(None).items() if k != Meta.SCORE}  # before the key
    assert read_metadata(old, "m.onnx").score == "ebo"
    with pytest.raises(ValueError, match="odin"):
        write_metadata(**_metadata_kwargs(), score="odin")  # no graph computes it
    with pytest.raises(DetectorError, match="ood_score"):
        read_metadata({**_metadata(None), Meta.SCORE: "odin"}, "m.onnx")


def test_a_models_data_root_is_the_callers_else_its_lineages(tmp_path):
    from oaml.contract import lineage_data_root

    trained = {"benchmark": "fmnist", "data_root": "/data/trained-on"}
    assert lineage_data_root(trained, tmp_path) == tmp_path
    assert lineage_data_root(trained, None) == Path("/data/trained-on")
    assert lineage_data_root({"benchmark": "fmnist"}, None) is None
    # No benchmark: no imglist to read in any folder.
    assert lineage_data_root({"data_root": "/data/x"}, tmp_path) is None
