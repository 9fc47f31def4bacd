"""Atomic file writes: write to a temporary name in the same folder, then rename.

A killed process therefore leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries (where the file system can), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not path.is_dir():  # some file systems cannot sync a folder; a file must sync
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str], fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` atomically, its data
    on the disk before the rename and the rename itself after (`fsync`)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        if fsync:
            _fsync(tmp_path)
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync(target.parent)


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[bytes]], None], fsync: bool = True
) -> None:
    """Call `write(file)` on a temporary binary file, then rename it to `path`.

    `fsync=False` still survives a killed process (the rename is atomic); it only gives up
    durability across a power loss, which matters for checkpoints, not for many small images.
    """
    with atomic_path(path, fsync) as tmp, open(tmp, "wb") as fh:
        write(fh)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, fsync: bool = True) -> None:
    atomic_write(path, lambda fh: fh.write(data), fsync=fsync)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    # allow_nan=False: NaN is not JSON; fail here rather than write a file nobody can parse.
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(path: str | os.PathLike[str]) -> dict[str, str]:
    """SHA-256 of a file ({name: hash}) or of every file below a folder ({relative path: hash},
    in path order, links followed): what a checkpoint folder's lineage records."""
    path = Path(path)
    if path.is_file():
        return {path.name: sha256_file(path)}
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return {p.relative_to(path).as_posix(): sha256_file(p) for p in files}


def tree_sha256(folder: str | os.PathLike[str]) -> str:
    """One SHA-256 for a folder's files and names: of its "relative path  file SHA-256" lines
    in path order (a file added, removed, renamed or changed changes it)."""
    listing = "".join(f"{name}  {digest}\n" for name, digest in files_sha256(folder).items())
    return hashlib.sha256(listing.encode()).hexdigest()


def checked_sha256(value: str, what: str) -> str:
    """`value` as a lowercase SHA-256 hex digest, or ValueError naming `what` and the fix (a
    malformed pin must fail closed, never read as "no check")."""
    digest = value.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(
            f"{what} {value[:80]!r} is not a SHA-256 (64 hex digits): set the value "
            "`oaml registry promote` printed"
        )
    return digest


def atomic_copy(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Copy a file or a folder to `target` through a temporary name: a reader sees the old
    copy or the new one, never half of one."""
    import shutil

    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    if source.is_dir():
        shutil.copytree(source, tmp)
        for copied in (tmp, *tmp.rglob("*")):
            _fsync(copied)
    else:
        shutil.copy2(source, tmp)
        _fsync(tmp)
    if target.is_dir():
        shutil.rmtree(target)
    tmp.replace(target)
    _fsync(target.parent)
    return target


def writable_folder(preferred: str | os.PathLike[str], fallback: str | os.PathLike[str]) -> Path:
    """`preferred`, created, where this process can write there; else `fallback` (created),
    e.g. a cache on a data volume mounted read-only or owned by another user in a container."""
    for folder in (Path(preferred), Path(fallback)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK | os.X_OK):
            return folder
    raise PermissionError(f"neither {preferred} nor {fallback} can be written: check the volumes")
