"""`oaml data import`'s pixel passes: probe (hash + header) and convert (decode, one channel
count, one size, PNG bytes written atomically), in a process pool, with a journal of finished
conversions so a killed import resumes where it stopped."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from oaml import imaging
from oaml.data.benchmarks import CLASSIC, IMGLIST_DIR
from oaml.data.import_sources import ImportConfig, ImportItem, read_bytes, skip_item
from oaml.io import atomic_write_bytes
from oaml.progress import progress

JOURNAL_FILE = ".import-journal.jsonl"  # conversions done
PROBE_FILE = ".import-probes.jsonl"  # files hashed and probed, by location and stamp
# Bump when the conversion's pixels change: the journal then redoes them (2: JPEG drafts).
CONVERT_VERSION = 2


def probe_file(task: tuple[str, int, int]) -> dict[str, Any]:
    """SHA-256 and header (size, mode) of one file, or the reason it is no image we read."""
    location, max_bytes, max_pixels = task
    try:
        data = read_bytes(location, max_bytes)
    except Exception as exc:  # a file or an object that cannot be read: reported, skipped
        return {"error": f"unreadable: {exc}"}
    found: dict[str, Any] = {"sha256": hashlib.sha256(data).hexdigest()}
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with Image.open(io.BytesIO(data)) as img:
            found.update(size=img.size, mode=img.mode, format=img.format)
    except Image.DecompressionBombError as exc:
        found["error"] = f"too many pixels: {exc}"
    except Exception as exc:  # any decoder failure: not an image we read
        found["error"] = f"not an image Pillow reads ({type(exc).__name__}: {exc})"
    else:
        if found["size"][0] * found["size"][1] > max_pixels:
            found["error"] = f"too many pixels ({found['size'][0]}x{found['size'][1]})"
    return found


def convert_file(task: tuple[str, str, int, int, int, int]) -> dict[str, Any]:
    """Decode one file fully, convert it to the benchmark's channels and size, write it as PNG
    at `target` (atomically); its pixel sums (for mean/std), or the reason it failed."""
    location, target, size, channels, max_bytes, max_pixels = task
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with Image.open(io.BytesIO(read_bytes(location, max_bytes))) as img:
            # A JPEG decodes at the smallest DCT scale (1/2 to 1/8) that still covers the target:
            # up to 64x fewer pixels for a large photo. Other formats ignore the draft.
            img.draft(imaging.mode_for(channels), (size, size))
            img.load()  # a truncated file fails here, not at the header
            pixels = imaging.resize(imaging.convert_mode(img, imaging.mode_for(channels)), size)
    except Exception as exc:  # any decoder failure skips the file
        return {"error": f"cannot be decoded ({type(exc).__name__}: {exc})"}
    array = np.asarray(pixels, dtype=np.uint8).reshape(size, size, channels)
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG")
    atomic_write_bytes(target, buffer.getvalue(), fsync=False)
    flat = array.reshape(-1, channels).astype(np.float64) / 255.0
    return {"sum": flat.sum(0).tolist(), "sumsq": (flat**2).sum(0).tolist(), "n": len(flat)}


def parallel(
    func: Callable[[Any], dict[str, Any]], tasks: list, workers: int, desc: str
) -> Iterator[dict[str, Any]]:
    """`func` over `tasks` in order, on `workers` processes (inline for one or few tasks)."""
    if workers <= 1 or len(tasks) < 64:
        yield from (func(t) for t in progress(tasks, desc=desc, unit="img"))
        return
    chunk = max(1, min(64, len(tasks) // (workers * 8)))
    # spawn, not fork: a caller may hold threads (torch, a progress bar) a fork would copy.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        done = pool.map(func, tasks, chunksize=chunk)
        yield from progress(done, desc=desc, unit="img", total=len(tasks))


class Journal:
    """Records a killed import need not redo, one JSON line each, appended as they finish
    (fsynced every FLUSH_EVERY lines and at the end); a line cut by the kill is ignored."""

    FLUSH_EVERY = 512

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        self.records: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    self.records[record[key]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    @contextmanager
    def appending(self) -> Iterator[Callable[[dict[str, Any]], None]]:
        """A function that records one finished item."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as log:
            count = 0

            def add(record: dict[str, Any]) -> None:
                nonlocal count
                self.records[record[self.key]] = record
                log.write(json.dumps(record) + "\n")
                count += 1
                if count % self.FLUSH_EVERY == 0:
                    log.flush()
                    os.fsync(log.fileno())

            try:
                yield add
            finally:
                log.flush()
                os.fsync(log.fileno())


def _folder(cfg: ImportConfig) -> Path:
    return Path(cfg.root) / IMGLIST_DIR / cfg.name


def probe_items(
    cfg: ImportConfig, items: list[ImportItem], workers: int, skipped: list
) -> tuple[list[ImportItem], int]:
    """Hash and probe every file (a file whose size and modification time, or S3 ETag, match a
    previous run's probe is not read again); (the items that are images, how many probes were
    reused); the rest are skipped."""
    journal = Journal(_folder(cfg) / PROBE_FILE, "location")
    found: dict[str, dict[str, Any]] = {}
    todo = []
    for item in items:
        known = journal.records.get(item.file.location)
        if item.file.stamp and known and known.get("stamp") == item.file.stamp:
            found[item.file.location] = known
        else:
            todo.append(item)
    tasks = [(i.file.location, cfg.max_bytes, cfg.max_pixels) for i in todo]
    with journal.appending() as add:
        for item, probed in zip(todo, parallel(probe_file, tasks, workers, "probing"), strict=True):
            found[item.file.location] = probed
            if "error" not in probed and item.file.stamp:
                add({"location": item.file.location, "stamp": item.file.stamp, **probed})
    kept = []
    for item in items:
        probed = found[item.file.location]
        if "\n" in item.out or "\r" in item.out:
            skip_item(skipped, item, "its path holds a line break (imglists are one per line)")
        elif "error" in probed:
            skip_item(skipped, item, probed["error"])
        else:
            item.sha256, item.size, item.mode = (
                probed["sha256"],
                tuple(probed["size"]),
                probed["mode"],
            )
            kept.append(item)
    return kept, len(items) - len(todo)


def convert_items(
    cfg: ImportConfig,
    items: list[ImportItem],
    size: int,
    channels: int,
    workers: int,
    skipped: list,
) -> tuple[list[ImportItem], dict[str, dict[str, Any]], int]:
    """Convert every item not already done; (items converted, pixel sums by output, reused)."""
    image_root = Path(cfg.root) / CLASSIC
    journal = Journal(_folder(cfg) / JOURNAL_FILE, "out")
    key = f"{CONVERT_VERSION}:{size}:{channels}"
    stats: dict[str, dict[str, Any]] = {}
    todo = []
    for item in items:
        record = journal.records.get(item.out)
        fresh = record and record.get("sha256") == item.sha256 and record.get("key") == key
        if fresh and (image_root / item.out).is_file():
            stats[item.out] = record
        else:
            todo.append(item)
    tasks = [
        (i.file.location, str(image_root / i.out), size, channels, cfg.max_bytes, cfg.max_pixels)
        for i in todo
    ]
    failed = set()
    with journal.appending() as add:
        results = parallel(convert_file, tasks, workers, "converting")
        for item, converted in zip(todo, results, strict=True):
            if "error" in converted:
                skip_item(skipped, item, converted["error"])
                failed.add(item.out)
                continue
            stats[item.out] = {"out": item.out, "sha256": item.sha256, "key": key, **converted}
            add(stats[item.out])
    return [i for i in items if i.out not in failed], stats, len(items) - len(todo)


def mean_std(records: list[dict[str, Any]], channels: int) -> tuple[list[float], list[float]]:
    total = np.zeros(channels)
    squares = np.zeros(channels)
    n = 0
    for r in records:
        total += r["sum"]
        squares += r["sumsq"]
        n += r["n"]
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(squares / max(n, 1) - mean**2, 1e-12))
    return [round(float(v), 6) for v in mean], [round(float(max(v, 1e-3)), 6) for v in std]
