"""Shards and the manifest of a synthesis run, shared by every backend.

A run writes its outputs in numbered shards, one `.npz` file per kind and shard (`images_00003.npz`,
`latents_00003.npz`), each atomically; the manifest, written last, lists them per kind. A killed
run resumes by skipping the shards that exist; since every backend seeds a shard from (seed,
shard number), the resumed run writes exactly what an uninterrupted run would. The manifest's
presence is what marks a run finished.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from oaml.io import atomic_write, atomic_write_json, sha256_file
from oaml.progress import progress

MANIFEST = "manifest.json"


class ShardWriter:
    """Numbered shards of `kinds` under `out`, then the manifest that lists them."""

    def __init__(self, out: str | Path, kinds: tuple[str, ...] = ("images",)) -> None:
        self.out, self.kinds = Path(out), kinds
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in self.out.glob(".*.tmp"):
            stale.unlink()  # left by a run killed while writing
        self.files: dict[str, list[str]] = {kind: [] for kind in kinds}

    def pending(self, jobs: Iterable[Any], desc: str) -> Iterator[tuple[int, Any]]:
        """(shard number, job) for every job whose shard is not written yet, with a bar."""
        for number, job in enumerate(progress(list(jobs), desc=desc, unit="shard")):
            names = {kind: f"{kind}_{number:05d}.npz" for kind in self.kinds}
            for kind, name in names.items():
                self.files[kind].append(name)
            if not all((self.out / name).is_file() for name in names.values()):
                yield number, job

    def write(self, number: int, arrays: dict[str, np.ndarray], **shared: np.ndarray) -> None:
        """Shard `number`: one file per kind holding that kind's array plus `shared` arrays."""
        for kind in self.kinds:
            payload = {kind: arrays[kind], **shared}
            atomic_write(
                self.out / f"{kind}_{number:05d}.npz", lambda fh, p=payload: np.savez(fh, **p)
            )

    def finish(self, kind: str, **fields: Any) -> Path:
        """Write the manifest (`kind` names the backend; the shard lists and their hash are
        added) and return its path."""
        names = [name for kind_files in self.files.values() for name in kind_files]
        digest = hashlib.sha256()
        for name in names:
            digest.update(bytes.fromhex(sha256_file(self.out / name)))
        manifest = {"kind": kind, **fields, **self.files, "shards_sha256": digest.hexdigest()}
        atomic_write_json(self.out / MANIFEST, manifest)
        return self.out / MANIFEST


def combine_runs(out: str | Path, parts: list[str]) -> Path:
    """One manifest over the finished runs in the subfolders `parts` of `out`: their image
    shards in order (latents are left out, since not every part has them)."""
    out = Path(out)
    images, count, digest = [], 0, hashlib.sha256()
    for part in parts:
        manifest = read_manifest(out / part)
        images += [f"{part}/{name}" for name in shard_files(manifest, "images")]
        count += int(manifest["count"])
        digest.update(str(manifest.get("shards_sha256")).encode())
    combined = {"kind": "combined", "parts": parts, "count": count, "images": images,
                "shards_sha256": digest.hexdigest()}  # fmt: skip
    atomic_write_json(out / MANIFEST, combined)
    return out / MANIFEST


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a finished run, or an error that says the run is missing or unfinished."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: the synthesis run in {folder} is missing or unfinished; "
            "run `oaml synthesize` again (it resumes)"
        )
    return json.loads(path.read_text())


def shard_files(manifest: dict[str, Any], kind: str) -> list[str]:
    """The shard files of `kind`; forward-diffusion runs written before the shared format
    listed their image shards under "shards"."""
    if kind == "images" and "images" not in manifest and "shards" in manifest:
        return list(manifest["shards"])
    return list(manifest.get(kind, []))


def load_kind(folder: str | Path, kind: str, manifest: dict[str, Any] | None = None) -> np.ndarray:
    """All arrays of `kind` of a finished run, concatenated in manifest order."""
    folder = Path(folder)
    manifest = manifest or read_manifest(folder)
    arrays = []
    for name in shard_files(manifest, kind):
        with np.load(folder / name) as shard:
            arrays.append(shard[kind])
    if not arrays:
        raise ValueError(f"the synthesis run in {folder} holds no {kind}")
    return np.concatenate(arrays)
