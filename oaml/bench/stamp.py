"""Where a measured number comes from: the command, the commit, the date and the machine, written
beside every benchmark's results so a table in the docs says when and how it was made."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _commit() -> str:
    """The repository's short commit (with "+changes" when the tree differs), or "unknown"."""
    root = Path(__file__).resolve().parents[2]
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
