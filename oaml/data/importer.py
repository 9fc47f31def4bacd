"""`oaml data import`: a user's labelled images (class subfolders, or a path,label table) into a
benchmark in the OpenOOD layout, described by its own spec file (oaml.data.benchmarks).

Three passes. (1) Probe, in parallel: each file's SHA-256 and image header, remembered by the
file's size and modification time (or S3 ETag), so a re-run reads only new or changed files;
non-images are listed with their reason. (2) Decide, in memory: the input size and channels
(from the data unless given), groups (a `--group-by` key or identical content) and the seeded,
stratified train / val / test / calibration split of whole groups; held-out classes and `--ood`
folders become OOD test sets. (3) Convert, in parallel: decode, one channel count, the input
size, PNG bytes under the source file's own name, each written atomically and journalled, so a
killed import resumes where it stopped. Imglists, the spec, the report and the manifest come
last.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oaml.data import ood_sources
from oaml.data.benchmarks import (
    BENCHMARKS,
    CLASSIC,
    IMGLIST_DIR,
    BenchmarkSpec,
    ImageSet,
    spec_path,
)
from oaml.data.imglist import ImglistEntry, format_imglist
from oaml.data.import_pixels import convert_items, mean_std, probe_items
from oaml.data.import_report import REPORT_FILE, import_report, strict_message, write_manifest
from oaml.data.import_sources import (
    DataImportError,
    ImportConfig,
    ImportItem,
    list_source,
    ood_files,
    safe_rel,
    skip_item,
)
from oaml.data.splits import SPLITS, assign_splits, group_key, groups_of
from oaml.io import atomic_write_json, atomic_write_text

OOD_LABEL = -1
FAR_SETS_FILE = ".far-sets.json"  # which far-OOD images an import made, and for what
FAR_SETS_VERSION = 1  # bump when the far sets' pixels change
GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
MAX_DEFAULT_SIZE = 224


@dataclass
class ImportResult:
    """Where an import wrote its benchmark, and what it counted."""

    name: str
    root: Path
    spec: Path
    report: Path
    manifest: Path
    counts: dict[str, int] = field(default_factory=dict)
    left_out: dict[str, int] = field(default_factory=dict)  # class -> its readable images


def _slug(name: str) -> str:
    """A set name usable in a file name: letters, digits, `-`, `_` and `.`."""
    slug = re.sub(r"[^\w.-]+", "_", name, flags=re.UNICODE).strip("._")
    return slug or "set"


def holdout_set(label: str) -> str:
    """The near-OOD set a held-out class becomes: its name, kept readable (only path separators
    and control characters replaced, as the set names files such as --save-scores' .npy)."""
    return "holdout_" + re.sub(r"[/\\\x00-\x1f]", "_", label)


def _items(cfg: ImportConfig) -> tuple[list[ImportItem], list[dict[str, str]], list[str]]:
    """Every file to import, what the listing passed over, and the ID class names (sorted)."""
    listing = list_source(cfg.source)
    classes = sorted({f.label for f in listing.files})
    unknown = [c for c in cfg.holdout_classes if c not in classes]
    if unknown:
        raise DataImportError(
            f"--holdout-classes {', '.join(unknown)}: no such class; classes: {', '.join(classes)}"
        )
    id_classes = [c for c in classes if c not in cfg.holdout_classes]
    if not id_classes:
        raise DataImportError("every class is held out: keep at least one class in training")
    # Below images_classic/<name>/: classes/<class>/..., ood/<set>/..., far/<set>/...; each
    # image keeps its path below its class (or OOD folder), so it ends in its own file name.
    items = []
    for f in listing.files:
        held = f.label in cfg.holdout_classes
        set_name = holdout_set(f.label) if held else f.label
        out = f"{cfg.name}/classes/{safe_rel(f.label)}/{safe_rel(f.rel)}"
        items.append(ImportItem(f, "ood" if held else "id", set_name, out))
    for set_name, folder, _group in cfg.ood:
        items.extend(
            ImportItem(f, "ood", set_name, f"{cfg.name}/ood/{_slug(set_name)}/{safe_rel(f.rel)}")
            for f in ood_files(set_name, folder)
        )
    return items, listing.passed_over, id_classes


def default_size(sizes: Iterable[tuple[int, int]]) -> int:
    """The images' median shorter side, rounded to a multiple of 8 (the generator's layers
    halve it twice), between 8 and MAX_DEFAULT_SIZE."""
    short = np.median([min(s) for s in sizes])
    return int(min(MAX_DEFAULT_SIZE, max(8, round(short / 8) * 8)))


def _drop_ood_copies_of_id(items: list[ImportItem], skipped: list) -> list[ImportItem]:
    """An OOD image identical to an ID image would score as ID by construction: drop it."""
    id_files = {i.sha256: i.file.location for i in items if i.role == "id"}
    kept = []
    for item in items:
        if item.role == "ood" and item.sha256 in id_files:
            skip_item(skipped, item, f"identical to ID image {id_files[item.sha256]}")
        else:
            kept.append(item)
    return kept


def _far_sets(cfg: ImportConfig, size: int, channels: int) -> dict[str, list[ImglistEntry]]:
    """The built-in real OOD sets (and the OOD validation set) at this data's size/channels;
    made once per (size, channels, seed, count, packaged sets): a re-import lists them again."""
    from oaml.data.prepare import write_images

    image_root = Path(cfg.root) / CLASSIC
    packaged = ood_sources.packaged_sets()
    key = {"size": size, "channels": channels, "seed": cfg.seed, "count": cfg.far_count,
           "packaged": sorted(packaged), "version": FAR_SETS_VERSION}  # fmt: skip
    made = Path(cfg.root) / IMGLIST_DIR / cfg.name / FAR_SETS_FILE
    if made.is_file():
        known = json.loads(made.read_text())
        listed = known.get("sets", {})
        if known.get("key") == key and all(
            (image_root / p).is_file() for v in listed.values() for p in v
        ):
            return {
                name: [ImglistEntry(p, OOD_LABEL) for p in paths] for name, paths in listed.items()
            }
    rng = np.random.default_rng(cfg.seed)
    count = cfg.far_count
    crops = {"textures": count, "photos": count, "val": count}
    sets = ood_sources.bundled_sets(size, cfg.seed, crops, channels)
    sets.update(ood_sources.packaged_images(size, channels, count, cfg.seed))
    written = {}
    for name, images in sets.items():
        if len(images) > count:
            images = [images[i] for i in np.sort(rng.choice(len(images), count, replace=False))]
        written[name] = write_images(
            image_root, f"{cfg.name}/far/{name}", images, f"far-OOD {name}"
        )
    atomic_write_json(made, {"key": key, "sets": written})
    return {name: [ImglistEntry(p, OOD_LABEL) for p in paths] for name, paths in written.items()}


class _Clock:
    """Seconds per phase of the import (the report shows where the time goes)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 2)
        self.last = now


def run_import(cfg: ImportConfig) -> ImportResult:
    """Import `cfg.source` as benchmark `cfg.name` under `cfg.root` (resuming a killed run)."""
    started = time.perf_counter()
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", cfg.name):
        raise DataImportError(f"--name {cfg.name!r}: use letters, digits, '-', '_' or '.'")
    if cfg.name in BENCHMARKS:
        raise DataImportError(
            f"--name {cfg.name}: that is a built-in benchmark; give your data its own name "
            "(in the pipeline: --set benchmark=NAME)"
        )
    fractions = cfg.fractions()
    try:
        pattern = re.compile(cfg.group_by) if cfg.group_by else None
    except re.error as exc:
        message = f"--group-by {cfg.group_by!r}: not a regular expression ({exc})"
        raise DataImportError(message) from None
    workers = cfg.workers or os.cpu_count() or 1
    items, passed_over, classes = _items(cfg)
    skipped: list[dict[str, str]] = [{**p, "set": "", "reason": p["reason"]} for p in passed_over]
    listed = len(items) + len(passed_over)
    clock = _Clock()
    probed, probes_reused = probe_items(cfg, items, workers, skipped)
    clock.lap("probe")
    items = _drop_ood_copies_of_id(probed, skipped)
    id_items = [i for i in items if i.role == "id"]
    if not id_items:
        raise DataImportError(f"--from {cfg.source}: no readable images in the ID classes")
    size = cfg.size or default_size(i.size for i in id_items)
    channels = cfg.channels or (1 if all(i.mode in GREY_MODES for i in id_items) else 3)
    if cfg.strict and skipped:
        raise DataImportError(strict_message(skipped))
    items, stats, reused = convert_items(cfg, items, size, channels, workers, skipped)
    clock.lap("convert")
    items, classes, left_out = _leave_out_small_classes(cfg, items, classes, skipped)
    if cfg.strict and skipped:
        raise DataImportError(strict_message(skipped))
    id_items = [i for i in items if i.role == "id"]
    index = {c: k for k, c in enumerate(classes)}
    labels = [index[i.set_name] for i in id_items]
    keys = [group_key(Path(i.file.rel).name, pattern) for i in id_items]
    groups = groups_of(keys, [i.sha256 for i in id_items])
    splits = assign_splits(labels, groups, fractions, cfg.seed)
    for item, split in zip(id_items, splits, strict=True):
        item.split = split
    train_stats = [stats[i.out] for i in id_items if i.split == "train"]
    mean, std = mean_std(train_stats, channels)
    far = _far_sets(cfg, size, channels)
    clock.lap("far_sets")
    spec, lists = _spec_and_lists(cfg, classes, size, channels, mean, std, id_items, items, far)
    folder = Path(cfg.root) / IMGLIST_DIR / cfg.name
    for rel, entries in lists.items():
        atomic_write_text(Path(cfg.root) / rel, format_imglist(entries))
    report = import_report(
        cfg, classes, id_items, items, skipped, size, channels, listed, reused, keys, groups,
        clock.laps,
    )  # fmt: skip
    report["left_out_classes"] = left_out
    report["counts"]["probes_reused"] = probes_reused
    atomic_write_json(spec_path(cfg.root, cfg.name), spec.to_dict())
    manifest = write_manifest(cfg, lists, report)
    clock.lap("write")
    report["seconds"] = round(time.perf_counter() - started, 2)
    atomic_write_json(folder / REPORT_FILE, {**report, "phase_seconds": clock.laps})
    counts = {k: report["counts"][k] for k in ("listed", "imported", "skipped")}
    return ImportResult(
        cfg.name, Path(cfg.root), spec_path(cfg.root, cfg.name), folder / REPORT_FILE, manifest,
        counts, left_out,
    )  # fmt: skip


def _leave_out_small_classes(
    cfg: ImportConfig, items: list[ImportItem], classes: list[str], skipped: list
) -> tuple[list[ImportItem], list[str], dict[str, int]]:
    """Classes with fewer than `cfg.min_per_class` readable images cannot be trained and tested
    (each split needs some): left out, each of their files reported; (items, classes, counts)."""
    counts = Counter(i.set_name for i in items if i.role == "id")
    small = {c: counts.get(c, 0) for c in classes if counts.get(c, 0) < cfg.min_per_class}
    if len(small) == len(classes):
        raise DataImportError(
            f"every class has fewer than --min-per-class {cfg.min_per_class} readable images "
            f"({', '.join(f'{c}: {n}' for c, n in small.items())}); add images or lower it"
        )
    for item in items:
        if item.role == "id" and item.set_name in small:
            reason = f"class {item.set_name!r} has only {small[item.set_name]} readable images"
            skip_item(skipped, item, f"{reason} (--min-per-class {cfg.min_per_class})")
    kept = [i for i in items if not (i.role == "id" and i.set_name in small)]
    return kept, [c for c in classes if c not in small], small


def _spec_and_lists(cfg, classes, size, channels, mean, std, id_items, items, far):
    """The benchmark's spec and its imglists (path below the root -> entries)."""
    folder = f"{IMGLIST_DIR}/{cfg.name}"
    index = {c: k for k, c in enumerate(classes)}

    def image_set(name: str, file: str, group: str) -> ImageSet:
        return ImageSet(name, f"{folder}/{file}", CLASSIC, group)

    lists: dict[str, list[ImglistEntry]] = {}
    sets: dict[str, ImageSet] = {}
    for split in SPLITS:
        name = cfg.name if split == "test" else f"{cfg.name}_{split}"
        sets[split] = image_set(name, f"{split}_{cfg.name}.txt", "id")
        lists[sets[split].imglist] = [
            ImglistEntry(i.out, index[i.set_name]) for i in id_items if i.split == split
        ]
    ood_val = image_set("ood_val", "val_ood.txt", "val")
    lists[ood_val.imglist] = far.pop("val")
    groups = {s: g for s, _, g in cfg.ood} | {holdout_set(c): "near" for c in cfg.holdout_classes}
    ood = []
    ood_names = sorted({i.set_name for i in items if i.role == "ood"})
    for name in ood_names:
        group = groups.get(name, "far")
        listed = [ImglistEntry(i.out, OOD_LABEL) for i in items if i.set_name == name]
        ood.append(image_set(name, f"test_{_slug(name)}.txt", group))
        lists[ood[-1].imglist] = listed
    for name, entries in far.items():
        if name in ood_names:
            continue  # the user's own set of that name wins
        ood.append(image_set(name, f"test_{name}.txt", "far"))
        lists[ood[-1].imglist] = entries
    spec = BenchmarkSpec(
        name=cfg.name, class_names=tuple(classes), input_size=size, channels=channels,
        mean=tuple(mean), std=tuple(std), train=sets["train"], val=sets["val"],
        test=sets["test"], calibration=sets["calibration"], ood_val=ood_val, ood=tuple(ood),
        source=f"oaml data import --from {cfg.source} --name {cfg.name} --root {cfg.root}",
    )  # fmt: skip
    return spec, lists
