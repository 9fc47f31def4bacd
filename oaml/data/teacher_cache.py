"""Frozen-teacher outputs (logits and pre-logit features) on an imglist, computed once and cached.

The teacher is frozen and, without random augmentation, sees the same pixels every epoch, so its
outputs are computed once per (teacher checkpoint, imglist, images) and reused by every later
stage and re-run. The cache key hashes the checkpoint file and the imglist's content.

The cache is a folder of two memory-mapped arrays (`logits.npy`, `features.npy`), filled in
shards of rows: ImageNet's 1.28M images x 768 features (3.9 GB) never sit in memory, the ranks of
a data-parallel run each compute every world_size-th shard in parallel, and a killed run redoes
only the shards without their `.done` marker. `complete.json`, written last, marks it usable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from oaml.data.imglist import ImglistDataset, ImglistEntry, format_imglist, parse_imglist
from oaml.data.transforms import build_transform, image_mode
from oaml.distributed import Distributed
from oaml.io import atomic_path, atomic_write_json, atomic_write_text, sha256_file
from oaml.models.checkpoint import load_checkpoint
from oaml.progress import progress

SHARD_ROWS = 8192
COMPLETE = "complete.json"


@dataclass(frozen=True)
class TeacherOutputs:
    logits: np.ndarray  # (N, classes) float32, memory-mapped read-only
    features: np.ndarray  # (N, feature_dim) float32, memory-mapped read-only
    paths: tuple[str, ...]  # imglist order
    cache_file: Path  # the cache folder
    reused: bool


def cache_key(checkpoint: Path, entries: list[ImglistEntry]) -> str:
    """Hash of the teacher checkpoint's bytes and the listed images (paths and labels)."""
    digest = hashlib.sha256()
    digest.update(bytes.fromhex(sha256_file(checkpoint)))
    digest.update(format_imglist(entries).encode("utf-8"))
    return digest.hexdigest()[:24]


def _open(folder: Path, entries: list[ImglistEntry], reused: bool) -> TeacherOutputs:
    logits = np.load(folder / "logits.npy", mmap_mode="r")
    features = np.load(folder / "features.npy", mmap_mode="r")
    if len(logits) != len(entries) or len(features) != len(entries):
        raise ValueError(
            f"teacher cache {folder} holds {len(logits)} rows for {len(entries)} images: "
            "delete that folder and run again"
        )
    return TeacherOutputs(logits, features, tuple(e.path for e in entries), folder, reused)


def _allocate(folder: Path, rows: int, classes: int, dim: int) -> None:
    """Create the two arrays (kept when a killed run left them with the right shapes)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shards").mkdir(exist_ok=True)
    for name, width in (("logits.npy", classes), ("features.npy", dim)):
        target = folder / name
        if target.is_file():
            existing = np.load(target, mmap_mode="r")
            if existing.shape == (rows, width):
                continue
        with atomic_path(target) as tmp:
            np.lib.format.open_memmap(tmp, "w+", np.float32, (rows, width)).flush()
        for marker in (folder / "shards").glob("*.done"):
            marker.unlink()  # rows of a replaced array are gone


@torch.no_grad()
def _fill_shard(model, dataset, rows: range, device, batch_size: int, workers: int, arrays):
    logits_out, features_out = arrays
    loader = DataLoader(
        Subset(dataset, rows),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    at = rows.start
    for images, _ in loader:
        out, feat = model(images.to(device, non_blocking=True), return_feature=True)
        logits_out[at : at + len(out)] = out.float().cpu().numpy()
        features_out[at : at + len(out)] = feat.float().cpu().numpy()
        at += len(out)
    logits_out.flush()
    features_out.flush()


def teacher_outputs(
    checkpoint: str | Path,
    imglist: str | Path,
    image_root: str | Path,
    cache_dir: str | Path,
    device: torch.device | None = None,
    batch_size: int = 256,
    entries: list[ImglistEntry] | None = None,
    dist: Distributed | None = None,
    num_workers: int = 0,
    shard_rows: int = SHARD_ROWS,
) -> TeacherOutputs:
    """The teacher's logits and features for every image of `imglist` (or only `entries` of
    it, e.g. a training subset), cached in cache_dir. Under data parallelism every rank calls
    this; each computes its own shards and all return the same memory-mapped arrays."""
    checkpoint, imglist = Path(checkpoint), Path(imglist)
    entries = entries if entries is not None else parse_imglist(imglist)
    folder = Path(cache_dir) / f"teacher_{cache_key(checkpoint, entries)}"
    if (folder / COMPLETE).is_file():
        return _open(folder, entries, reused=True)
    dist = dist or Distributed()
    device = device or torch.device("cpu")
    model, spec, _ = load_checkpoint(checkpoint)
    model.to(device)
    if dist.is_main:
        _allocate(folder, len(entries), spec.num_classes, model.feature_dim)
        atomic_write_text(folder / "imglist.txt", format_imglist(entries))
    dist.barrier()
    dataset = ImglistDataset(
        imglist, image_root, build_transform(spec), mode=image_mode(spec), entries=entries
    )
    arrays = tuple(np.load(folder / n, mmap_mode="r+") for n in ("logits.npy", "features.npy"))
    shards = range(0, len(entries), shard_rows)[dist.rank :: dist.world_size]
    bar = progress(shards, desc="teacher outputs", unit="shard", disable=not dist.is_main)
    for start in bar:
        marker = folder / "shards" / f"{start // shard_rows:06d}.done"
        if marker.is_file():
            continue
        rows = range(start, min(start + shard_rows, len(entries)))
        _fill_shard(model, dataset, rows, device, batch_size, num_workers, arrays)
        marker.touch()
    del arrays
    dist.barrier()
    if dist.is_main:
        atomic_write_json(
            folder / COMPLETE,
            {"rows": len(entries), "checkpoint": str(checkpoint), "imglist": str(imglist)},
        )
    dist.barrier()
    return _open(folder, entries, reused=False)
