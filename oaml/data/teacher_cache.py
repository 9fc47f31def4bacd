"""Frozen-teacher outputs (logits and pre-logit features) on an imglist, computed once and cached.

The teacher is frozen and, without random augmentation, sees the same pixels every epoch, so its
outputs are computed once per (teacher checkpoint, imglist, images) and reused by every later
stage and re-run. The cache key hashes the checkpoint file and the imglist's content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from oaml.data.imglist import ImglistDataset, ImglistEntry, format_imglist, parse_imglist
from oaml.data.transforms import build_transform, image_mode
from oaml.io import atomic_write, sha256_file
from oaml.models.checkpoint import load_checkpoint
from oaml.progress import progress


@dataclass(frozen=True)
class TeacherOutputs:
    logits: np.ndarray  # (N, classes) float32
    features: np.ndarray  # (N, feature_dim) float32
    paths: tuple[str, ...]  # imglist order
    cache_file: Path
    reused: bool


def cache_key(checkpoint: Path, entries: list[ImglistEntry]) -> str:
    """Hash of the teacher checkpoint's bytes and the listed images (paths and labels)."""
    digest = hashlib.sha256()
    digest.update(bytes.fromhex(sha256_file(checkpoint)))
    digest.update(format_imglist(entries).encode("utf-8"))
    return digest.hexdigest()[:24]


@torch.no_grad()
def teacher_outputs(
    checkpoint: str | Path,
    imglist: str | Path,
    image_root: str | Path,
    cache_dir: str | Path,
    device: torch.device | None = None,
    batch_size: int = 256,
    entries: list[ImglistEntry] | None = None,
) -> TeacherOutputs:
    """The teacher's logits and features for every image of `imglist` (or only `entries` of
    it, e.g. a training subset), cached in cache_dir."""
    checkpoint, imglist = Path(checkpoint), Path(imglist)
    entries = entries if entries is not None else parse_imglist(imglist)
    cache_file = Path(cache_dir) / f"teacher_{cache_key(checkpoint, entries)}.npz"
    if cache_file.is_file():
        with np.load(cache_file) as cached:
            return TeacherOutputs(
                cached["logits"],
                cached["features"],
                tuple(cached["paths"].tolist()),
                cache_file,
                reused=True,
            )
    device = device or torch.device("cpu")
    model, spec, _ = load_checkpoint(checkpoint)
    model.to(device)
    dataset = ImglistDataset(
        imglist, image_root, build_transform(spec), mode=image_mode(spec), entries=entries
    )
    logits, features = [], []
    loader = DataLoader(dataset, batch_size=batch_size)
    for images, _ in progress(loader, desc="teacher outputs", unit="batch"):
        out, feat = model(images.to(device), return_feature=True)
        logits.append(out.float().cpu())
        features.append(feat.float().cpu())
    result = TeacherOutputs(
        torch.cat(logits).numpy(),
        torch.cat(features).numpy(),
        tuple(e.path for e in dataset.entries),
        cache_file,
        reused=False,
    )
    atomic_write(
        cache_file,
        lambda fh: np.savez(
            fh, logits=result.logits, features=result.features, paths=np.array(result.paths)
        ),
    )
    return result
