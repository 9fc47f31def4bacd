"""Where a measured number comes from: the command, the commit, the date and the machine, written
beside every benchmark's results so a table in the docs says when and how it was made."""

from __future__ import annotations

import io
import os
import platform
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[2]  # the checkout oaml runs from


def _commit() -> str:
    """The repository's short commit (with "+changes" when the tree differs), or "unknown"."""
    root = _ROOT
    try:
        run = {"cwd": root, "capture_output": True, "text": True, "timeout": 10, "check": True}
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "oaml"], **run).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+changes" if dirty else "")


def machine() -> str:
    """CPU model, cores and memory of this machine, in words."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB"


def stamp(argv: list[str] | None = None) -> dict[str, Any]:
    """The command line that ran (`oaml ...`), the commit, the UTC date and the machine."""
    args = sys.argv[1:] if argv is None else argv
    return {
        "command": " ".join(["oaml", *args]),
        "commit": _commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
    }


def stamp_line(found: dict[str, Any]) -> str:
    """One Markdown line a generated table ends with."""
    return (
        f"Measured with `{found['command']}` at commit {found['commit']}, "
        f"{found['date']}, on {found['machine']}."
    )


def source_tree(revision: str, out_dir: Path) -> Path:
    """This checkout's code at `revision`, unpacked under `out_dir` (run from there with the
    same interpreter and packages: only oaml's own code differs)."""
    repo = _ROOT
    tree = out_dir / f"baseline-{revision.replace('/', '_')}"
    if not (tree / "oaml").is_dir():
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", revision],
            capture_output=True, check=False,
        )  # fmt: skip
        if archive.returncode:
            raise ValueError(
                f"--baseline {revision!r}: not a revision of the git checkout at {repo} "
                f"({archive.stderr.decode(errors='replace').strip()[:200]})"
            )
        tree.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tree, filter="data")
    return tree
