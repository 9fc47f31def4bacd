"""What `oaml data import` writes beside the imglists: the import report (counts, classes,
splits, duplicates, every skipped file with its reason) and the SHA-256 manifest."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from oaml.data.benchmarks import CLASSIC, IMGLIST_DIR
from oaml.data.imglist import ImglistEntry
from oaml.data.import_sources import ImportConfig, ImportItem
from oaml.data.splits import SPLITS
from oaml.io import atomic_write_json, sha256_file

REPORT_FILE = "import_report.json"
MANIFEST_FILE = "manifest.json"


def duplicates(items: list[ImportItem]) -> dict[str, Any]:
    """Files with identical content: how many, and which sets they join."""
    by_hash: dict[str, list[ImportItem]] = {}
    for item in items:
        by_hash.setdefault(item.sha256, []).append(item)
    copies = [group for group in by_hash.values() if len(group) > 1]
    across = [g for g in copies if len({i.set_name for i in g}) > 1]
    return {
        "groups": len(copies),
        "files": sum(len(g) for g in copies),
        "across_classes": len(across),
        "examples": [[i.file.location for i in g] for g in (across + copies)[:20]],
    }


def strict_message(skipped: list[dict[str, str]]) -> str:
    shown = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:3])
    return (
        f"--strict: {len(skipped)} file(s) cannot be imported ({shown}"
        f"{' ...' if len(skipped) > 3 else ''}); fix or remove them, or drop --strict to skip "
        "them with a report"
    )


def import_report(
    cfg, classes, id_items, items, skipped, size, channels, listed, reused, keys, groups, laps
) -> dict[str, Any]:
    """The import report: what came in, where it went, what was skipped and why."""
    per_class = {
        c: {s: 0 for s in ("images", *SPLITS)} for c in classes
    }  # fmt: skip
    for item in id_items:
        per_class[item.set_name]["images"] += 1
        per_class[item.set_name][item.split] += 1
    sizes = [c["images"] for c in per_class.values()]
    ood_counts = Counter(i.set_name for i in items if i.role == "ood")
    imported = len(items)
    return {
        "name": cfg.name,
        "source": str(cfg.source),
        "settings": {
            **{k: v for k, v in asdict(cfg).items() if k not in ("root",)},
            "root": str(cfg.root),
        },
        "input_size": size,
        "size_from": "--size" if cfg.size else "the images' median shorter side",
        "channels": channels,
        "channels_from": "--channels" if cfg.channels else "the images' modes",
        "counts": {
            "listed": listed,
            "imported": imported,
            "skipped": len(skipped),
            "reused": reused,
            **{s: sum(1 for i in id_items if i.split == s) for s in SPLITS},
        },
        "classes": per_class,
        "imbalance": round(max(sizes) / max(1, min(sizes)), 3),
        "small_classes": [c for c, n in per_class.items() if n["images"] < len(SPLITS)],
        # Classes a split has no image of (too few images or groups to spread them).
        "missing_from": {
            s: [c for c, n in per_class.items() if n[s] == 0]
            for s in SPLITS
            if any(n[s] == 0 for n in per_class.values())
        },
        "ood": dict(sorted(ood_counts.items())),
        "groups": {
            "group_by": cfg.group_by,
            "groups": len(set(groups)),
            "files_without_key": sum(1 for k in keys if k is None) if cfg.group_by else None,
        },
        "duplicates": duplicates(items),
        "skipped": skipped,
        # The rate of your images through the two pixel passes (probe and convert).
        "images_per_second": round(imported / max(laps["probe"] + laps["convert"], 1e-9), 1),
    }


def write_manifest(cfg: ImportConfig, lists: dict[str, list[ImglistEntry]], report: dict) -> Path:
    """SHA-256 of every imglist and of its images (as `oaml data prepare`'s manifest)."""
    from oaml.data.prepare import MANIFEST_VERSION, images_sha256

    image_root = Path(cfg.root) / CLASSIC
    imglists = {
        rel: {
            "sha256": sha256_file(Path(cfg.root) / rel),
            "images_sha256": images_sha256(image_root, entries),
            "count": len(entries),
        }
        for rel, entries in lists.items()
    }
    path = Path(cfg.root) / IMGLIST_DIR / cfg.name / MANIFEST_FILE
    atomic_write_json(
        path,
        {
            "version": MANIFEST_VERSION,
            "benchmark": cfg.name,
            "seed": cfg.seed,
            "imported_from": str(cfg.source),
            "image_size": report["input_size"],
            "channels": report["channels"],
            "imglists": imglists,
        },
    )
    return path
