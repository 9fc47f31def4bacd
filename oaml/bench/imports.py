"""`oaml bench import`: `oaml data import`'s images/s on three kinds of real pictures (painted
sprites, clip art, 12-megapixel photos), each against a plain loop over the same files (one
process, full decode, convert, resize, PNG: what one writes by hand), and what a million images
would take at the measured rate."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from oaml import imaging
from oaml.bench.report import write_results
from oaml.data import ood_sources
from oaml.data.benchmarks import get_benchmark
from oaml.data.import_sources import list_source
from oaml.data.importer import ImportConfig, run_import

SPRITES = Path("/usr/share/games/wesnoth/1.16/data/core/images/units")
PHOTO_SIZE = (4032, 3024)  # a 12-megapixel phone photo


def _linked_sample(files: list[Path], top: Path, folder: Path, count: int, seed: int) -> Path:
    """`count` of `files` (seeded) linked into one class folder per first folder below `top`."""
    chosen = np.random.default_rng(seed).choice(len(files), min(count, len(files)), replace=False)
    for index in np.sort(chosen):
        path = files[index]
        link = folder / path.relative_to(top).parts[0] / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(path)
    return folder


def _photo_source(folder: Path, count: int, seed: int) -> Path:
    """`count` JPEGs at phone resolution (quality 90, light sensor-like noise) from scikit-image's
    photographs, one class per photograph, each a different crop; made once, then reused."""
    rng = np.random.default_rng(seed)
    names = ood_sources.PHOTO_TEST_SOURCES
    for k in range(count):
        name = names[k % len(names)]
        target = folder / name / f"photo{k:04d}.jpg"
        crop = rng.uniform(0.6, 1.0, 2)
        if target.is_file():
            continue
        picture = ood_sources.skimage_image(name, 3)
        height, width = (np.array(picture.shape[:2]) * crop).astype(int)
        top = int(rng.integers(picture.shape[0] - height + 1))
        left = int(rng.integers(picture.shape[1] - width + 1))
        big = Image.fromarray(picture[top : top + height, left : left + width]).resize(
            PHOTO_SIZE, Image.Resampling.BICUBIC
        )
        noise = np.random.default_rng(k).normal(0, 4, (*PHOTO_SIZE[::-1], 3))
        noisy = np.clip(np.asarray(big, np.float32) + noise, 0, 255).astype(np.uint8)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy).save(target, "JPEG", quality=90)
    return folder


def _plain_loop(files: list[str], size: int, channels: int, out: Path) -> float:
    """Images/s of the hand-written loop: open, decode fully, convert, resize, save PNG."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for k, location in enumerate(files):
        with Image.open(location) as img:
            img.load()
            pixels = imaging.resize(imaging.convert_mode(img, imaging.mode_for(channels)), size)
        pixels.save(out / f"{k}.png")
    return len(files) / (time.perf_counter() - started)


def bench_import(
    out: Path,
    photos: int = 96,
    clipart: int = 2000,
    sprites: int = 6000,
    baseline_files: int = 200,
    workers: int | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Import each kind of picture into a fresh benchmark under OUT/data and time it against the
    plain loop on (an even sample of) the same files; OUT/import.json and OUT/import.md."""
    out = Path(out)
    sources: dict[str, tuple[Path, str]] = {}
    if SPRITES.is_dir():
        found = sorted(SPRITES.rglob("*.png"))
        folder = _linked_sample(found, SPRITES, out / "sources" / "sprites", sprites, 0)
        sources["sprites"] = (folder, "Wesnoth unit sprites (72x72 RGBA PNG)")
    if ood_sources.CLIPART_DIR.is_dir():
        found = list(ood_sources.clipart_files())
        top = ood_sources.CLIPART_DIR
        folder = _linked_sample(found, top, out / "sources" / "clipart", clipart, 0)
        sources["clipart"] = (folder, "openclipart drawings (PNG, a few hundred px)")
    folder = _photo_source(out / "sources" / "photos", photos, 0)
    sources["photos"] = (folder, "12-megapixel JPEG photos")
    rows = []
    for name, (folder, what) in sources.items():
        root = out / "data" / name
        shutil.rmtree(root, ignore_errors=True)  # a fresh import, nothing reused
        # Speed, not class sizes: a small sample's rare classes stay in (min_per_class=1).
        cfg = ImportConfig(
            str(folder), f"bench-{name}", root, workers=workers, far_count=20, min_per_class=1
        )
        result = run_import(cfg)
        report = json.loads(result.report.read_text())
        seconds = report["phase_seconds"]["probe"] + report["phase_seconds"]["convert"]
        imported = report["counts"]["imported"]
        spec = get_benchmark(cfg.name, root)
        listed = list_source(folder).files
        sample = [f.location for f in listed[:: max(1, len(listed) // baseline_files)]]
        loop = _plain_loop(sample, spec.input_size, spec.channels, out / "loop" / name)
        rate = imported / seconds
        row = {"set": name, "pictures": what, "images": imported, "size": spec.input_size}
        row.update(channels=spec.channels, seconds=round(seconds, 2), loop_images=len(sample))
        row.update(images_per_second=round(rate, 1), loop_images_per_second=round(loop, 1))
        row.update(ratio=round(rate / loop, 2), hours_per_million=round(1e6 / rate / 3600, 2))
        rows.append({**row, "workers": workers or os.cpu_count()})
        shutil.rmtree(out / "loop" / name, ignore_errors=True)
    return write_results(out, "import.json", {"sets": rows}, argv)


def markdown(result: dict[str, Any]) -> str:
    """The table the docs include (`oaml bench report` adds where it was measured)."""
    rows = "".join(
        f"| {r['pictures']} | {r['images']:,} | {r['size']} px x {r['channels']} | "
        f"{r['images_per_second']:,.0f} | {r['loop_images_per_second']:,.0f} | "
        f"{r['ratio']:.1f}x | {r['hours_per_million']:.1f} h |\n"
        for r in result["sets"]
    )
    return (
        "| pictures | imported | stored as | import (img/s) | plain loop (img/s) "
        "| import / loop | 1M images |\n|---|---|---|---|---|---|---|\n"
        + rows
        + "\nimport: listing, reading, SHA-256 and header probe, then decode (JPEG at a reduced "
        "DCT scale), convert, resize and PNG, on every core; the far-OOD sets are made once per "
        "benchmark and not counted. Plain loop: one process, full decode, the same conversion. "
        "1M images: at the import's rate on this machine; it grows with the cores.\n"
    )
