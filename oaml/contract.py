"""The detector contract: graph names, metadata, calibration and the OOD decision, each once.

Training calibrates, export writes the metadata, quantization recalibrates, tracking and serving
read it back; all of them import these definitions instead of re-stating them, so a threshold
cannot flip sign between stages. Imports the standard library and numpy only: serving needs no
torch.

Units: the graph outputs the free energy E(x) (lower = more in-distribution; the confidence is
-E). The threshold is stored in energy units: energy above it is OOD. A detector exported with
another score (msp, mls, gen, knn) has a third output `score`, that score's confidence (higher =
more in-distribution), and a threshold of its own in those units: a confidence below it is OOD.
Either way the server decides on one confidence (`confidence_threshold`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "oaml-detector/1"
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "energy")
SCORE_OUTPUT = "score"  # the third output of a detector exported with a non-energy score
# Scores a detector graph computes: of the logits alone (oaml.scores; ebo is the energy itself),
# and the feature scores, their fitted constants stored in the graph (oaml.export.feature_scores).
SERVABLE_SCORES = ("ebo", "msp", "mls", "gen", "knn", "mds", "rmds", "vim")
INPUT_LAYOUT = "NHWC uint8"
ID_TPR = 0.95  # the share of ID validation images the calibrated threshold keeps
# How images are resized to the model's input size (oaml.imaging.resize, PIL's filters); a model
# records its own and a detector file carries it. Bilinear is what every model so far used.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
DEFAULT_INTERPOLATION = "bilinear"


class Meta:
    """The metadata_props keys of an exported detector (values are strings, lists/dicts JSON)."""

    FORMAT = "oaml.format"
    VERSION = "oaml.version"
    ARCH = "arch"
    CLASS_NAMES = "class_names"
    INPUT_SIZE = "input_size"
    CHANNELS = "channels"
    INPUT_LAYOUT = "input_layout"
    MEAN = "mean"
    STD = "std"
    INTERPOLATION = "interpolation"  # the resize training used (oaml.imaging.resize)
    TEMPERATURE = "temperature"
    LINEAGE = "lineage"
    THRESHOLD = "ood_threshold"  # energy units
    CALIBRATION = "calibration"  # Calibration.to_dict() as JSON
    VARIANT = "variant"  # set on derived files, e.g. "int8"
    SCORE = "ood_score"  # the score the detector decides on (default ebo: the energy)
    SCORE_THRESHOLD = "ood_score_threshold"  # confidence units, for a score other than ebo
    SCORE_SETTINGS = "ood_score_settings"  # JSON: knn's k and bank size


# What each metadata key holds (docs/reference/onnx-metadata.md is generated from this).
META_DOCS: dict[str, str] = {
    Meta.FORMAT: f"`{FORMAT}`: readers refuse a file without it (not an oaml detector)",
    Meta.VERSION: "the oaml version that exported the file",
    Meta.ARCH: "the student's architecture (`student.model.arch` of its preset)",
    Meta.CLASS_NAMES: "JSON list: the class of each logit, in order (an answer's `class_name`)",
    Meta.INPUT_SIZE: "the side length images are resized to before the graph",
    Meta.CHANNELS: "1 (grey) or 3 (RGB): what images are converted to",
    Meta.INPUT_LAYOUT: f"`{INPUT_LAYOUT}`: raw pixels; normalisation happens inside the graph",
    Meta.MEAN: "JSON list: the per-channel mean the graph subtracts (0..1 units)",
    Meta.STD: "JSON list: the per-channel standard deviation the graph divides by",
    Meta.INTERPOLATION: f"the resize filter training used, one of {', '.join(INTERPOLATIONS)}",
    Meta.TEMPERATURE: "T of the energy output E = -T logsumexp(logits / T)",
    Meta.LINEAGE: "JSON object: the training lineage (benchmark, method, data, weights) and the "
    "checkpoint's SHA-256",
    Meta.THRESHOLD: "the calibrated energy threshold (energy above it = OOD)",
    Meta.CALIBRATION: "JSON object: how it was calibrated (score, temperature, ID TPR, split, "
    "images)",
    Meta.VARIANT: "set on derived files only, e.g. `int8` for `oaml export --int8`",
    Meta.SCORE: f"the score the detector decides on, one of {', '.join(SERVABLE_SCORES)}",
    Meta.SCORE_THRESHOLD: "for a score other than ebo: its threshold (confidence below it = OOD)",
    Meta.SCORE_SETTINGS: "JSON object: a feature score's fitted settings (knn's k, bank size)",
}

# The registry tag with the SHA-256 of a version's ONNX file: written at registration, checked
# when the server loads that version, so what is served is byte for byte what was registered.
ONNX_SHA256_TAG = "onnx_sha256"
# A registered version's Triton model repository: the run artifact folder, and its tree digest
# (oaml.io.tree_sha256) as registration computed it.
TRITON_REPO_TAG = "triton_repo"
TRITON_SHA256_TAG = "triton_sha256"


def main_onnx(files: list[Path]) -> Path | None:
    """The graph a registered version serves: its full-precision file before an int8 variant."""
    ordered = sorted(files, key=lambda p: (".int8." in p.name, str(p)))
    return ordered[0] if ordered else None


class DetectorError(ValueError):
    """A file that is not a usable oaml detector; the message names the file and the fix."""


def energy_threshold(id_energy: np.ndarray, id_tpr: float = ID_TPR) -> float:
    """The lowest energy threshold that keeps at least `id_tpr` of ID samples (energy <= it).

    It is the k-th lowest energy for the fewest k with k / n >= id_tpr (k / n computed as a
    float, as an ROC curve computes its TPR), so it is also the point an ROC curve picks.
    """
    ordered = np.sort(np.asarray(id_energy, np.float64).ravel())
    if ordered.size == 0:
        raise ValueError("calibration needs at least one ID sample")
    if not np.isfinite(ordered).all():
        raise ValueError("calibration energies contain NaN or infinity")
    if not 0.0 < id_tpr <= 1.0:
        raise ValueError(f"id_tpr must lie in (0, 1], got {id_tpr}")
    n = ordered.size
    keep = max(1, math.ceil(id_tpr * n))
    while keep > 1 and (keep - 1) / n >= id_tpr:  # id_tpr * n rounded up past an integer
        keep -= 1
    return float(ordered[keep - 1])


def is_ood(energy: np.ndarray, threshold: float) -> np.ndarray:
    """Per sample: True where the energy lies above the (energy-unit) threshold, or is NaN."""
    return ~(np.asarray(energy) <= threshold)


def servable(score: str) -> str:
    """`score` where a detector graph can compute it, else a ValueError that says which can."""
    if score not in SERVABLE_SCORES:
        raise ValueError(
            f"a detector can serve the scores {', '.join(SERVABLE_SCORES)}, not {score!r} "
            "(compare it with `oaml evaluate --score`)"
        )
    return score


def confidence_threshold(id_confidence: np.ndarray, id_tpr: float = ID_TPR) -> float:
    """The highest confidence threshold that keeps at least `id_tpr` of ID samples
    (confidence >= it): the energy rule on -confidence."""
    return -energy_threshold(-np.asarray(id_confidence, np.float64), id_tpr)


def below(confidence: np.ndarray, threshold: float) -> np.ndarray:
    """Per sample: True (OOD) where the confidence lies below the confidence threshold, and
    where it is NaN (fail closed: a score that cannot be compared is no evidence of ID)."""
    return ~(np.asarray(confidence) >= threshold)


@dataclass(frozen=True)
class Calibration:
    """The calibrated OOD threshold and how it was obtained; travels in checkpoints and ONNX."""

    energy_threshold: float  # energy above it = OOD
    temperature: float = 1.0  # of the energy the threshold was calibrated on
    id_tpr: float = ID_TPR
    score: str = "ebo"
    split: str = "val"
    images: int | None = None  # how many ID images it was calibrated on

    @classmethod
    def fit(
        cls,
        id_energy: np.ndarray,
        temperature: float = 1.0,
        split: str = "val",
        id_tpr: float = ID_TPR,
    ) -> Calibration:
        """Calibrate on the energies of ID images (at `temperature`) from `split`."""
        id_energy = np.asarray(id_energy)
        return cls(
            energy_threshold=energy_threshold(id_energy, id_tpr),
            temperature=float(temperature),
            id_tpr=float(id_tpr),
            split=split,
            images=int(id_energy.size),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a checkpoint or the ONNX `calibration` JSON."""
        return {
            "score": self.score,
            "temperature": self.temperature,
            "id_tpr": self.id_tpr,
            "energy_threshold": self.energy_threshold,
            "split": self.split,
            "images": self.images,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Read `to_dict`'s output, or a legacy dict whose `threshold` is a confidence (-energy)."""
        if "energy_threshold" in data:
            threshold = float(data["energy_threshold"])
        elif "threshold" in data:  # written before the contract: confidence units
            threshold = -float(data["threshold"])
        else:
            raise ValueError(f"calibration {dict(data)!r} has no energy_threshold")
        images = data.get("images")
        return cls(
            energy_threshold=threshold,
            temperature=float(data.get("temperature", 1.0)),
            id_tpr=float(data.get("id_tpr", ID_TPR)),
            score=str(data.get("score", "ebo")),
            split=str(data.get("split", "val")),
            images=None if images is None else int(images),
        )


@dataclass(frozen=True)
class DetectorInfo:
    """What the graph's metadata says about its inputs and outputs."""

    class_names: tuple[str, ...]
    input_size: int
    channels: int
    temperature: float
    threshold: float | None  # energy above it = OOD; None when the file was not calibrated
    mean: tuple[float, ...]
    std: tuple[float, ...]
    arch: str
    metadata: dict[str, str] = field(repr=False)
    interpolation: str = DEFAULT_INTERPOLATION  # resize images to input_size with this filter
    score: str = "ebo"  # what the detector decides on; not ebo: the graph's `score` output
    score_threshold: float | None = None  # confidence units, for a score other than ebo

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def confidence_threshold(self) -> float | None:
        """The threshold in confidence units (below it = OOD): -energy threshold for ebo."""
        if self.score == "ebo":
            return None if self.threshold is None else -self.threshold
        return self.score_threshold

    @property
    def calibration(self) -> Calibration | None:
        """How the file's threshold was calibrated, when it says so."""
        text = self.metadata.get(Meta.CALIBRATION)
        return Calibration.from_dict(json.loads(text)) if text else None


def calibration_props(calibration: Calibration) -> dict[str, str]:
    """The metadata_props that carry a calibration: the threshold and its provenance."""
    return {
        Meta.THRESHOLD: repr(float(calibration.energy_threshold)),
        Meta.CALIBRATION: json.dumps(calibration.to_dict(), sort_keys=True),
    }


def write_metadata(
    *,
    version: str,
    arch: str,
    class_names: Sequence[str],
    input_size: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    temperature: float,
    lineage: Mapping[str, Any],
    calibration: Calibration | None = None,
    interpolation: str = DEFAULT_INTERPOLATION,
    score: str = "ebo",
    score_threshold: float | None = None,
) -> dict[str, str]:
    """The metadata_props of an exported detector, from plain values (all strings)."""
    servable(score)
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; known: {list(INTERPOLATIONS)}")
    if calibration is not None and calibration.temperature != float(temperature):
        raise ValueError(
            f"the threshold was calibrated at temperature {calibration.temperature}, "
            f"the graph uses {temperature}: the energies would not match"
        )
    meta = {
        Meta.FORMAT: FORMAT,
        Meta.VERSION: version,
        Meta.ARCH: arch,
        Meta.CLASS_NAMES: json.dumps(list(class_names)),
        Meta.INPUT_SIZE: str(int(input_size)),
        Meta.CHANNELS: str(int(channels)),
        Meta.INPUT_LAYOUT: INPUT_LAYOUT,
        Meta.MEAN: json.dumps([float(v) for v in mean]),
        Meta.STD: json.dumps([float(v) for v in std]),
        Meta.INTERPOLATION: interpolation,
        Meta.TEMPERATURE: repr(float(temperature)),
        Meta.LINEAGE: json.dumps(dict(lineage), sort_keys=True),
    }
    if calibration is not None:
        meta.update(calibration_props(calibration))
    meta[Meta.SCORE] = score
    if score != "ebo" and score_threshold is not None:
        meta[Meta.SCORE_THRESHOLD] = repr(float(score_threshold))
    return meta


def read_metadata(meta: Mapping[str, str], path: str | Path) -> DetectorInfo:
    """The DetectorInfo of a detector's metadata_props; DetectorError names `path` and the fix."""
    if meta.get(Meta.FORMAT) != FORMAT:
        raise DetectorError(
            f"{path} is not an oaml detector (metadata {Meta.FORMAT!r} is "
            f"{meta.get(Meta.FORMAT)!r}, expected {FORMAT!r}); export one with `oaml export`"
        )
    # Files exported before the key existed were all trained with the default.
    interpolation = meta.get(Meta.INTERPOLATION, DEFAULT_INTERPOLATION)
    if interpolation not in INTERPOLATIONS:
        raise DetectorError(
            f"{path}: metadata {Meta.INTERPOLATION!r} is {interpolation!r}, not one of "
            f"{list(INTERPOLATIONS)}; re-export the model"
        )
    score = meta.get(Meta.SCORE, "ebo")  # files from before the key decided on the energy
    if score not in SERVABLE_SCORES:
        raise DetectorError(
            f"{path}: metadata {Meta.SCORE!r} is {score!r}, not one of {list(SERVABLE_SCORES)}; "
            "re-export the model"
        )
    try:
        threshold = meta.get(Meta.THRESHOLD)
        score_threshold = meta.get(Meta.SCORE_THRESHOLD)
        return DetectorInfo(
            class_names=tuple(json.loads(meta[Meta.CLASS_NAMES])),
            input_size=int(meta[Meta.INPUT_SIZE]),
            channels=int(meta[Meta.CHANNELS]),
            temperature=float(meta[Meta.TEMPERATURE]),
            threshold=None if threshold is None else float(threshold),
            mean=tuple(json.loads(meta[Meta.MEAN])),
            std=tuple(json.loads(meta[Meta.STD])),
            arch=meta.get(Meta.ARCH, "unknown"),
            metadata=dict(meta),
            interpolation=interpolation,
            score=score,
            score_threshold=None if score_threshold is None else float(score_threshold),
        )
    except (KeyError, ValueError) as exc:
        raise DetectorError(f"{path}: broken oaml metadata ({exc}); re-export the model") from None


def lineage_data_root(lineage: Mapping[str, Any], given: str | Path | None) -> Path | None:
    """The ID data folder for a model: the caller's, else the one its lineage was trained on
    (None when neither is known, or the lineage names no benchmark to read there)."""
    if not lineage.get("benchmark"):
        return None
    if given:
        return Path(given)
    return Path(lineage["data_root"]) if lineage.get("data_root") else None
