"""`oaml score`: score many image files offline with the exported detector, CSV or JSONL out.

Same decoding and session as the server (oaml.serving.images, oaml.serving.detector), so a file
gets the same label and energy here as from `/v1/score`. Inputs stream through in batches, so
memory stays bounded however many files there are; the output appears atomically when done.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oaml.data.imglist import parse_imglist
from oaml.io import atomic_path
from oaml.progress import progress
from oaml.serving.detector import Detector
from oaml.serving.images import ImageInputError, decode_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
FIELDS = ("path", "label", "class_name", "confidence", "energy", "is_ood", "error")


@dataclass
class ScoreSummary:
    out: Path
    images: int
    ood: int
    errors: int


def iter_images(
    inputs: Iterable[str | Path], image_root: str | Path | None = None
) -> Iterator[Path]:
    """Image files from files, folders (recursive, sorted) and imglists (`.txt`): imglist paths
    are relative to `image_root` (OpenOOD's images_classic/), else to the imglist's folder."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            yield from (p for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.suffix.lower() == ".txt":
            base = Path(image_root) if image_root else path.parent
            yield from (base / e.path for e in parse_imglist(path))
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"input {path} does not exist")


def _batches(paths: Iterator[Path], size: int) -> Iterator[list[Path]]:
    batch: list[Path] = []
    for path in paths:
        batch.append(path)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Writer:
    """CSV or JSON Lines rows, chosen by the output file's suffix."""

    def __init__(self, fh, fmt: str) -> None:
        self.fh, self.fmt = fh, fmt
        self.csv = csv.DictWriter(fh, FIELDS) if fmt == "csv" else None
        if self.csv:
            self.csv.writeheader()

    def write(self, row: dict) -> None:
        if self.csv:
            self.csv.writerow(row)
        else:
            self.fh.write(json.dumps(row) + "\n")


def score_images(
    detector: Detector,
    inputs: Iterable[str | Path],
    out: str | Path,
    batch_size: int = 256,
    image_root: str | Path | None = None,
) -> ScoreSummary:
    """Score every image of `inputs` into `out` (.csv or .jsonl); unreadable files get an error
    row instead of stopping the run."""
    out = Path(out)
    fmt = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(out.suffix.lower())
    if fmt is None:
        raise ValueError(f"--out {out} must end in .csv or .jsonl")
    info = detector.info
    if info.confidence_threshold is None:
        raise ValueError(f"{detector.path} has no calibrated OOD threshold; pass --threshold")
    total = ood = errors = 0
    with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = _Writer(fh, fmt)
        for chunk in progress(
            _batches(iter_images(inputs, image_root), batch_size), "score", unit="batch"
        ):
            images, kept = [], []
            for path in chunk:
                try:
                    images.append(
                        decode_image(
                            path,
                            info.input_size,
                            info.channels,
                            str(path),
                            interpolation=info.interpolation,
                        )
                    )
                    kept.append(path)
                except ImageInputError as exc:
                    errors += 1
                    writer.write({"path": str(path), "error": str(exc)})
            if not images:
                continue
            answers = detector.decide(*detector.run(np.stack(images)))
            for path, answer in zip(kept, answers, strict=True):
                writer.write({"path": str(path), **answer, "error": None})
                ood += answer["is_ood"]
            total += len(kept)
    return ScoreSummary(out, total, ood, errors)
