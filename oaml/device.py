"""Choose the compute device once; everything else receives it as an argument."""

from __future__ import annotations

import torch


def pick_device(name: str = "auto") -> torch.device:
    """`auto` = CUDA when available, else CPU; otherwise the named device, checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here; use cpu")
    return device
