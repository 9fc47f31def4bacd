"""Peer servers for `oaml bench serve`, each in a virtual environment of its own (their pins are
not the project's), built once and reused."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

KSERVE_VERSION = "0.21.0"
DEFAULT_PEER_ROOT = Path.home() / ".cache" / "oaml" / "peers"
PEER_SCRIPT = Path(__file__).with_name("kserve_peer.py")


def kserve_python(venv: Path | None = None) -> Path:
    """The interpreter of a venv holding kserve (pinned) and this project's onnxruntime and numpy
    versions (the same kernels as `oaml serve`); created from PyPI on first use."""
    venv = venv or DEFAULT_PEER_ROOT / f"kserve-{KSERVE_VERSION}"
    python = venv / "bin" / "python"
    pins = [
        f"kserve=={KSERVE_VERSION}",
        f"onnxruntime=={version('onnxruntime')}",
        f"numpy=={version('numpy')}",
    ]
    stamp = venv / ".oaml-peer"
    if python.exists() and stamp.exists() and stamp.read_text() == " ".join(pins):
        return python
    print(f"building the KServe peer's environment in {venv} ({', '.join(pins)})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins],
        check=True,
    )
    stamp.write_text(" ".join(pins))
    return python
