"""Self-describing checkpoints: weights plus the ModelSpec, training state and lineage.

A later stage (evaluate, export, serve) needs only the file: architecture, classes, input size,
channels and mean/std travel inside it. Writes are atomic, so a kill never leaves half a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from oaml.io import atomic_path
from oaml.models.factory import ModelSpec, build_model
from oaml.models.net import OamlNet

FORMAT = "oaml-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not an oaml checkpoint or cannot be read."""


def save_checkpoint(path: str | Path, model: OamlNet, spec: ModelSpec, **extra: Any) -> Path:
    """Write weights, spec and any extra entries (optimizer, epoch, metrics...) atomically."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "state_dict": model.state_dict(),
        **extra,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, validated; errors name the path."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an oaml checkpoint (no '{FORMAT}' header)")
    return payload


def load_checkpoint(path: str | Path) -> tuple[OamlNet, ModelSpec, dict[str, Any]]:
    """Rebuild the model from a checkpoint, in eval mode on CPU, with its spec and payload."""
    payload = read_checkpoint(path)
    spec = ModelSpec.from_dict(payload["spec"])
    model = build_model(spec)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, spec, payload
