"""`oaml data prepare`: build the offline benchmarks (fmnist, fmnist6) in the OpenOOD layout.

ID images are Fashion-MNIST; OOD test and validation images are real pictures bundled with
scikit-learn and scikit-image. Everything is deterministic in the seed, every file is written
atomically, and `benchmark_imglist/<name>/manifest.json` (written last) records a SHA-256 per
imglist and per imglist's images, so a second run verifies instead of rebuilding.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from oaml.data import fashion_mnist, ood_sources
from oaml.data.benchmarks import CLASSIC, FMNIST_FAR, far_sets, get_benchmark, spec_path
from oaml.data.imglist import ImglistEntry, format_imglist, hash_file_stats, parse_imglist
from oaml.io import atomic_write_json, atomic_write_text, sha256_file
from oaml.progress import progress

MANIFEST_VERSION = 3  # 3: the packaged far sets (clip art, glyphs) where installed
VAL_SIZE = 5000
HELD_OUT_FIRST_CLASS = 6  # fmnist6: classes 0-5 are ID, 6-9 are near-OOD
OOD_LABEL = -1
SIZE = 28
OOD_COUNTS = {"textures": 1800, "photos": 1800, "val": 1000}
PACKAGED_COUNT = 1000  # images per packaged far set (clip art, glyphs)


@dataclass(frozen=True)
class PrepareResult:
    benchmark: str
    root: Path
    manifest: Path
    reused: bool


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 (H, W) or (H, W, 3) array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def write_images(
    image_root: Path, folder: str, images: list[np.ndarray] | np.ndarray, desc: str
) -> list[str]:
    """Write images as PNGs under image_root/folder; return their relative paths.

    A file that already holds exactly these bytes is left alone, so a re-run is cheap and a
    damaged or stale image (other source files) is replaced.
    """
    paths = []
    width = max(5, len(str(len(images))))
    (image_root / folder).mkdir(parents=True, exist_ok=True)
    for index, array in enumerate(progress(images, desc=desc, unit="img")):
        rel = f"{folder}/{index:0{width}d}.png"
        target = image_root / rel
        data = png_bytes(np.ascontiguousarray(array))
        if not (target.is_file() and target.read_bytes() == data):
            # Write-then-rename keeps a killed run from leaving a truncated PNG behind.
            partial = target.with_name(target.name + ".part")
            partial.write_bytes(data)
            os.replace(partial, target)
        paths.append(rel)
    return paths


def _split_train_val(labels: np.ndarray, seed: int, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified train/val split of the training indices (55k/5k by default)."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    train, val = train_test_split(
        indices, test_size=val_size, stratify=labels, random_state=seed, shuffle=True
    )
    return np.sort(train), np.sort(val)


def _id_lists(
    image_root: Path, seed: int, source_dir: Path | None, val_size: int
) -> dict[str, list[ImglistEntry]]:
    """Write Fashion-MNIST images; return train/val/test entries with original labels."""
    train_images, train_labels = fashion_mnist.load_split("train", source_dir)
    test_images, test_labels = fashion_mnist.load_split("test", source_dir)
    train_paths = write_images(image_root, "fashion_mnist/train", train_images, "fmnist train")
    test_paths = write_images(image_root, "fashion_mnist/test", test_images, "fmnist test")
    train_idx, val_idx = _split_train_val(train_labels, seed, val_size)

    def entries(paths, labels, idx):
        return [ImglistEntry(paths[i], int(labels[i])) for i in idx]

    return {
        "train": entries(train_paths, train_labels, train_idx),
        "val": entries(train_paths, train_labels, val_idx),
        "test": entries(test_paths, test_labels, range(len(test_paths))),
    }


def _ood_lists(image_root: Path, seed: int) -> dict[str, list[ImglistEntry]]:
    """Write the OOD images (the bundled sets, and the packaged ones this machine has);
    return their entries (label -1)."""
    sets = ood_sources.bundled_sets(SIZE, seed, OOD_COUNTS)
    sets.update(ood_sources.packaged_images(SIZE, 1, PACKAGED_COUNT, seed))
    # Crops depend on the seed, so each seed has its own folder (fmnist and fmnist6 may differ).
    return {
        name: [
            ImglistEntry(p, OOD_LABEL)
            for p in write_images(image_root, f"oaml_ood/seed{seed}/{name}", images, f"ood {name}")
        ]
        for name, images in sets.items()
    }


def _files_for(benchmark: str, ids: dict, oods: dict) -> dict[str, list[ImglistEntry]]:
    """The imglist file names of `benchmark` mapped to their entries."""
    far = {f"test_{n}.txt": oods[n] for n in (*FMNIST_FAR, *ood_sources.PACKAGED) if n in oods}
    common = {"val_ood.txt": oods["val"], "test_digits.txt": oods["digits"], **far}
    if benchmark == "fmnist":
        return {
            "train_fmnist.txt": ids["train"],
            "val_fmnist.txt": ids["val"],
            "test_fmnist.txt": ids["test"],
            **common,
        }
    keep = [e for e in ids["test"] if e.label < HELD_OUT_FIRST_CLASS]
    held_out = [
        ImglistEntry(e.path, OOD_LABEL) for e in ids["test"] if e.label >= HELD_OUT_FIRST_CLASS
    ]
    return {
        "train_fmnist6.txt": [e for e in ids["train"] if e.label < HELD_OUT_FIRST_CLASS],
        "val_fmnist6.txt": [e for e in ids["val"] if e.label < HELD_OUT_FIRST_CLASS],
        "test_fmnist6.txt": keep,
        "test_fmnist_held_out.txt": held_out,
        **common,
    }


def images_sha256(image_root: Path, entries: list[ImglistEntry]) -> str:
    """One SHA-256 over every listed image's path and bytes, in list order."""
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(entry.path.encode("utf-8") + b"\0")
        digest.update(bytes.fromhex(sha256_file(image_root / entry.path)))
    return digest.hexdigest()


def _checked_path(manifest_path: Path) -> Path:
    """Where the last full check of a benchmark's images is remembered (not part of its
    manifest, so the data lineage does not change with it)."""
    return manifest_path.with_name("checked.json")


def _check_record(manifest_path: Path, image_root: Path, listed: dict) -> dict:
    """What a full check of the images in `listed` (imglist -> entries) is remembered by."""
    stats = {}
    for rel, entries in listed.items():  # a file rewritten or truncated since changes its digest
        digest = hashlib.sha256()
        hash_file_stats(digest, image_root, entries)
        stats[rel] = digest.hexdigest()
    return {"manifest_sha256": sha256_file(manifest_path), "stats": stats}


def verify(
    benchmark: str, root: Path, seed: int | None = None, val_size: int | None = None
) -> bool:
    """True when the manifest exists (for this seed and split) and every imglist matches it.
    Images are hashed only when their sizes or times changed since the last full check."""
    manifest_path = root / "benchmark_imglist" / benchmark / "manifest.json"
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        return False
    if (seed is not None and manifest.get("seed") != seed) or (
        val_size is not None and manifest.get("val_size") != val_size
    ):
        return False
    if manifest.get("packaged") != sorted(ood_sources.packaged_sets()):
        return False  # the packaged sets were installed (or removed) since: rebuild
    image_root = root / CLASSIC
    listed = {}
    for rel, info in manifest.get("imglists", {}).items():
        path = root / rel
        if not path.is_file() or sha256_file(path) != info["sha256"]:
            return False
        listed[rel] = parse_imglist(path)
    try:
        checked = _check_record(manifest_path, image_root, listed)
    except OSError:  # a listed image is missing
        return False
    try:
        if json.loads(_checked_path(manifest_path).read_text()) == checked:
            return True
    except (OSError, ValueError):
        pass  # never checked, or a damaged record: check in full
    for rel, entries in listed.items():
        if images_sha256(image_root, entries) != manifest["imglists"][rel]["images_sha256"]:
            return False
    atomic_write_json(_checked_path(manifest_path), checked)
    return True


def prepare(
    benchmark: str,
    root: str | Path,
    seed: int = 0,
    source_dir: str | Path | None = None,
    force: bool = False,
    val_size: int = VAL_SIZE,
) -> PrepareResult:
    """Build (or verify) the offline benchmark `benchmark` under `root`."""
    spec = get_benchmark(benchmark)
    if not spec.preparable:
        raise ValueError(
            f"benchmark {benchmark!r} cannot be built offline; download the OpenOOD v1.5 data "
            "and pass its folder as --data-root (offline benchmarks: fmnist, fmnist6)"
        )
    root = Path(root).resolve()
    manifest_path = root / "benchmark_imglist" / benchmark / "manifest.json"
    if not force and verify(benchmark, root, seed, val_size):
        return PrepareResult(benchmark, root, manifest_path, reused=True)
    image_root = root / CLASSIC
    ids = _id_lists(image_root, seed, Path(source_dir) if source_dir else None, val_size)
    oods = _ood_lists(image_root, seed)
    imglists, written = {}, []
    for file_name, entries in _files_for(benchmark, ids, oods).items():
        rel = f"benchmark_imglist/{benchmark}/{file_name}"
        atomic_write_text(root / rel, format_imglist(entries))
        imglists[rel] = {
            "sha256": sha256_file(root / rel),
            "images_sha256": images_sha256(image_root, entries),
            "count": len(entries),
        }
        written.append(entries)
    packaged = [name for name in ood_sources.PACKAGED if name in oods]  # built just now
    spec = replace(spec, ood=(*spec.ood, *far_sets(benchmark, packaged)))
    atomic_write_json(spec_path(root, benchmark), spec.to_dict())
    manifest = {
        "version": MANIFEST_VERSION,
        "benchmark": benchmark,
        "seed": seed,
        "val_size": val_size,
        "image_size": SIZE,
        "packaged": packaged,
        "sources": {
            "id": "Fashion-MNIST (IDX files)",
            "digits": "scikit-learn load_digits",
            "textures": list(ood_sources.TEXTURE_SOURCES),
            "photos": list(ood_sources.PHOTO_TEST_SOURCES),
            "faces": "scikit-image lfw_subset",
            "val_ood": list(ood_sources.PHOTO_VAL_SOURCES),
            **{name: f"Debian package {ood_sources.PACKAGED[name][0]}" for name in packaged},
        },
        "imglists": imglists,
    }
    atomic_write_json(manifest_path, manifest)
    checked = _check_record(manifest_path, image_root, dict(zip(imglists, written, strict=True)))
    atomic_write_json(_checked_path(manifest_path), checked)
    return PrepareResult(benchmark, root, manifest_path, reused=False)


def manifest_sha256(benchmark: str, root: str | Path) -> str | None:
    """SHA-256 of a prepared benchmark's manifest (data lineage for checkpoints), if present."""
    path = Path(root) / "benchmark_imglist" / benchmark / "manifest.json"
    return sha256_file(path) if path.is_file() else None
