"""Where `oaml data import` finds a user's images: a folder of class subfolders (on disk or
under an S3 prefix), or a CSV / imglist of `path,label`. Each lists `SourceFile`s (where to read
the bytes, a path to keep, the class); everything after the listing is the same for every source.

S3 goes through boto3 with the usual AWS settings from the environment (credentials, region);
the endpoint of an S3-compatible store (MinIO, SeaweedFS, Ceph) is `AWS_ENDPOINT_URL_S3` or
`AWS_ENDPOINT_URL` (boto3's own), else `MLFLOW_S3_ENDPOINT_URL` (the one MLflow's users set).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from oaml.data.splits import SPLITS

S3_SCHEME = "s3://"

LIST_SUFFIXES = (".csv", ".txt", ".tsv")


class DataImportError(ValueError):
    """An import that cannot go on; the message names the problem and the fix."""


@dataclass(frozen=True)
class ImportConfig:
    """What `oaml data import` was asked for (every option of the command)."""

    source: str
    name: str
    root: Path
    holdout_classes: tuple[str, ...] = ()
    # (set name, folder, group): the user's OOD images.
    ood: tuple[tuple[str, str, str], ...] = ()
    group_by: str | None = None
    seed: int = 0
    size: int | None = None  # None: from the images (their median shorter side)
    channels: int | None = None  # None: 1 when every image is grey, else 3
    val: float = 0.1
    test: float = 0.15
    calibration: float = 0.1
    strict: bool = False
    # A class with fewer readable images is left out (and reported): too few to train and test.
    min_per_class: int = 10
    workers: int | None = None  # None: one per core
    far_count: int = 1000  # images per built-in far-OOD set (and the OOD validation set)
    max_pixels: int = 100_000_000  # a larger image is skipped (decompression bombs)
    max_bytes: int = 256 << 20  # a larger file is skipped

    def fractions(self) -> dict[str, float]:
        train = 1.0 - self.val - self.test - self.calibration
        if min(self.val, self.test, self.calibration) < 0 or train <= 0:
            raise DataImportError(
                f"--val {self.val} + --test {self.test} + --calibration {self.calibration} "
                "must leave a positive share for training (each >= 0, sum < 1)"
            )
        return dict(zip(SPLITS, (train, self.val, self.test, self.calibration), strict=True))


def parse_ood(item: str) -> tuple[str, str, str]:
    """`[near:]SET=DIR` (the --ood option) into (set, folder, group); far unless marked near."""
    name, sep, folder = item.partition("=")
    group = "far"
    if name.startswith("near:"):
        name, group = name[len("near:") :], "near"
    if not sep or not name.strip() or not folder.strip():
        raise DataImportError(f"--ood {item!r}: expected SET=DIR (or near:SET=DIR)")
    if name.strip() == "id":
        raise DataImportError(f"--ood {item!r}: 'id' names the ID test set; choose another name")
    return name.strip(), folder.strip(), group


# The options a pipeline's `import_options` JSON may set, by `oaml data import`'s option names.
PIPELINE_OPTIONS = (
    "holdout_classes", "ood", "group_by", "seed", "size", "channels", "val", "test",
    "calibration", "strict", "min_per_class", "far_count",
)  # fmt: skip


def config_from_options(
    source: str, name: str, root: Path, options: dict[str, Any]
) -> ImportConfig:
    """The import a pipeline's `import_from` and `import_options` ask for (a JSON object of
    PIPELINE_OPTIONS; lists for holdout_classes and ood)."""
    unknown = sorted(set(options) - set(PIPELINE_OPTIONS))
    if unknown:
        raise DataImportError(
            f"import_options: unknown {', '.join(unknown)}; known: {', '.join(PIPELINE_OPTIONS)}"
        )
    given = dict(options)
    if "holdout_classes" in given:
        given["holdout_classes"] = tuple(str(c) for c in given["holdout_classes"])
    if "ood" in given:
        given["ood"] = tuple(parse_ood(str(o)) for o in given["ood"])
    return ImportConfig(source=source, name=name, root=Path(root), **given)


@dataclass(frozen=True)
class SourceFile:
    """One file to import: `location` to read, `rel` the path kept below its class (ending in the
    source file's own name), `label` its class name (or OOD set)."""

    location: str
    rel: str
    label: str
    # What identifies this version of the file without reading it: size and modification time
    # (a local file) or size and ETag (S3); a re-import does not read a file whose stamp it knows.
    stamp: str = ""


@dataclass
class ImportItem:
    """One file on its way through the import: its source, where it goes, what probing found."""

    file: SourceFile
    role: str  # "id" (a class) or "ood" (a holdout class or an --ood folder)
    set_name: str  # the class name, or the OOD set's name
    out: str = ""  # path below images_classic/
    sha256: str = ""
    size: tuple[int, int] = (0, 0)
    mode: str = ""
    split: str = ""


def skip_item(skipped: list[dict[str, str]], item: ImportItem, reason: str) -> None:
    """Note that `item` is not imported, and why (the import report lists it)."""
    skipped.append({"file": item.file.location, "set": item.set_name, "reason": reason})


@dataclass
class Listing:
    """The files found, and what was passed over while listing (with the reason)."""

    files: list[SourceFile]
    passed_over: list[dict[str, str]]


def _walk(folder: Path) -> list[Path]:
    """Every regular file below `folder`, in a stable (sorted) order."""
    return sorted(p for p in folder.rglob("*") if p.is_file())


def folder_files(folder: Path, label: str) -> list[SourceFile]:
    """Every file below `folder` (any depth) as a member of `label`."""
    return [
        SourceFile(str(p), p.relative_to(folder).as_posix(), label, local_stamp(p))
        for p in _walk(folder)
    ]


def local_stamp(path: Path) -> str:
    """A local file's size and modification time (nanoseconds): changes when it is rewritten."""
    found = path.stat()
    return f"{found.st_size}:{found.st_mtime_ns}"


def list_class_folders(root: Path) -> Listing:
    """One class per subfolder of `root` (the subfolder's name), images at any depth below it;
    files directly in `root` belong to no class and are passed over."""
    if not root.is_dir():
        raise DataImportError(f"--from {root}: no such folder (give a folder of class subfolders)")
    files: list[SourceFile] = []
    passed: list[dict[str, str]] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            files.extend(folder_files(entry, entry.name))
        else:
            passed.append({"file": str(entry), "reason": "not in a class subfolder"})
    if not files:
        raise DataImportError(
            f"--from {root}: found no files in class subfolders; lay it out as "
            "ROOT/<class name>/<images> (the ImageFolder convention)"
        )
    return Listing(files, passed)


def list_table(table: Path) -> Listing:
    """Rows `path,label` (CSV with an optional header) or `path label` (an imglist); a relative
    path is relative to the table's folder; the label is the class name (a number is a name)."""
    text = table.read_text(encoding="utf-8-sig")
    rows: list[tuple[int, str, str]] = []
    if table.suffix.lower() == ".txt":
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                path, _, label = line.strip().rpartition(" ")
                rows.append((number, path.strip(), label.strip()))
    else:
        dialect = "excel-tab" if table.suffix.lower() == ".tsv" else "excel"
        for number, row in enumerate(csv.reader(text.splitlines(), dialect=dialect), 1):
            if number == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                continue
            if any(c.strip() for c in row):
                if len(row) < 2:
                    raise DataImportError(f"{table}:{number}: expected 'path,label', got {row!r}")
                rows.append((number, row[0].strip(), row[1].strip()))
    files: list[SourceFile] = []
    for number, path, label in rows:
        if not path or not label:
            raise DataImportError(f"{table}:{number}: expected a path and a label")
        resolved = (Path(path) if Path(path).is_absolute() else table.parent / path).resolve()
        stamp = local_stamp(resolved) if resolved.is_file() else ""
        files.append(SourceFile(str(resolved), resolved.name, label, stamp))
    if not files:
        raise DataImportError(f"--from {table}: lists no images (expected lines 'path,label')")
    # Two rows may name files of one name in different folders: keep them apart below the class.
    names: dict[tuple[str, str], int] = {}
    for f in files:
        names[(f.label, f.rel)] = names.get((f.label, f.rel), 0) + 1
    return Listing(
        [
            SourceFile(f.location, _row_rel(f, table), f.label, f.stamp)
            if names[(f.label, f.rel)] > 1
            else f
            for f in files
        ],
        [],
    )


def _row_rel(file: SourceFile, table: Path) -> str:
    """A listed file's path below its class where its name alone is ambiguous: its folder path
    (relative to the table where it lies below it) kept, so the name stays the last part."""
    path = Path(file.location)
    try:
        return path.relative_to(table.parent.resolve()).as_posix()
    except ValueError:
        return path.as_posix().lstrip("/")


def safe_rel(rel: str) -> str:
    """`rel` without empty, `.` or `..` parts: an output path that stays inside its folder."""
    return "/".join(p for p in rel.replace("\\", "/").split("/") if p not in ("", ".", ".."))


@cache
def s3_client() -> Any:
    """One boto3 S3 client per process (the import's workers each make their own)."""
    import boto3

    endpoint = None
    if not (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")):
        endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None
    return boto3.client("s3", endpoint_url=endpoint)


def split_s3(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix` into (bucket, prefix)."""
    bucket, _, prefix = url[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise DataImportError(f"--from {url}: expected s3://BUCKET/PREFIX")
    return bucket, prefix


def _s3_objects(url: str, option: str) -> tuple[str, str, list[tuple[str, str]]]:
    """(bucket, prefix ending in '/', sorted (key, stamp) of every object below it)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3(url)
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        objects = sorted(
            ((o["Key"], f"{o['Size']}:{o.get('ETag', '')}") for page in pages
             for o in page.get("Contents", []) if not o["Key"].endswith("/")),
        )  # fmt: skip
    except (BotoCoreError, ClientError) as exc:
        raise DataImportError(
            f"{option} {url}: cannot list it ({exc}); check the bucket, AWS credentials and the "
            "endpoint (AWS_ENDPOINT_URL or MLFLOW_S3_ENDPOINT_URL)"
        ) from None
    return bucket, prefix, objects


def ood_files(set_name: str, folder: str) -> list[SourceFile]:
    """The files of an `--ood SET=DIR` set: a folder, or every object below an S3 prefix."""
    if folder.startswith(S3_SCHEME):
        bucket, prefix, objects = _s3_objects(folder, f"--ood {set_name}=")
        files = [
            SourceFile(f"{S3_SCHEME}{bucket}/{key}", key[len(prefix) :], set_name, stamp)
            for key, stamp in objects
        ]
    else:
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise DataImportError(f"--ood {set_name}={folder}: no such folder")
        files = folder_files(path, set_name)
    if not files:
        raise DataImportError(f"--ood {set_name}={folder}: holds no files")
    return files


def list_s3_classes(url: str) -> Listing:
    """Classes as the first path part below `s3://bucket/prefix/`, images at any depth below."""
    bucket, prefix, objects = _s3_objects(url, "--from")
    files: list[SourceFile] = []
    passed: list[dict[str, str]] = []
    for key, stamp in objects:
        label, sep, rel = key[len(prefix) :].partition("/")
        if label.startswith("."):
            continue  # hidden entries
        if not sep:
            passed.append({"file": f"{S3_SCHEME}{bucket}/{key}", "reason": "not in a class prefix"})
        else:
            files.append(SourceFile(f"{S3_SCHEME}{bucket}/{key}", rel, label, stamp))
    if not files:
        raise DataImportError(
            f"--from {url}: found no objects below class prefixes; lay it out as "
            f"{url.rstrip('/')}/<class name>/<images>"
        )
    return Listing(files, passed)


def read_bytes(location: str, max_bytes: int) -> bytes:
    """At most `max_bytes` of a file or S3 object (ValueError when it holds more)."""
    if location.startswith(S3_SCHEME):
        bucket, key = split_s3(location)
        body = s3_client().get_object(Bucket=bucket, Key=key)["Body"]
        data = body.read(max_bytes + 1)
        body.close()
    else:
        with open(location, "rb") as fh:
            data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"file larger than {max_bytes >> 20} MiB")
    return data


def list_source(source: str | Path) -> Listing:
    """The files of `--from`: a class-folder tree (a folder or an S3 prefix), or a CSV/imglist."""
    if str(source).startswith(S3_SCHEME):
        return list_s3_classes(str(source))
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        return list_table(path)
    if path.is_file():
        raise DataImportError(
            f"--from {path}: a file must be a .csv/.tsv of path,label or an imglist .txt"
        )
    return list_class_folders(path)


def source_fingerprint(cfg: ImportConfig) -> str:
    """SHA-256 of what the import would read now: each listed file's class, path and stamp (size
    and modification time, or size and ETag) for `--from` and every --ood folder, read from the
    listings alone. It changes when a file is added, removed or rewritten; the pipeline keys its
    cached data step on it."""
    listed = [(f.label, f.rel, f.stamp) for f in list_source(cfg.source).files]
    for name, folder, _group in cfg.ood:
        listed += [(name, f.rel, f.stamp) for f in ood_files(name, folder)]
    digest = hashlib.sha256(json.dumps([cfg.source, listed]).encode())
    return digest.hexdigest()
