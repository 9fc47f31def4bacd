"""Run a model over a loader and collect its logits: what validation and evaluation share."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from oaml.device import autocast
from oaml.models.net import OamlNet
from oaml.progress import progress


@torch.no_grad()
def predict(
    model: OamlNet,
    loader: DataLoader,
    device: torch.device,
    amp: bool = False,
    desc: str = "predict",
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (float32) and labels for every batch of `loader`, in order."""
    model.eval()
    model.to(memory_format=torch.channels_last)
    logits, labels = [], []
    for images, targets in progress(loader, desc=desc, unit="batch"):
        with autocast(device, amp):
            out = model(images.to(device, non_blocking=True, memory_format=torch.channels_last))
        logits.append(out.float().cpu())
        labels.append(torch.as_tensor(targets))
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


@torch.no_grad()
def predict_with_features(
    model: OamlNet, loader: DataLoader, device: torch.device, desc: str = "predict"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, labels and penultimate features (float32) for every batch, in full precision:
    what the post-hoc feature scores (KNN, MDS, RMDS, ViM) read."""
    model.eval()
    model.to(memory_format=torch.channels_last)
    logits, labels, features = [], [], []
    for images, targets in progress(loader, desc=desc, unit="batch"):
        out, feat = model(
            images.to(device, non_blocking=True, memory_format=torch.channels_last),
            return_feature=True,
        )
        logits.append(out.float().cpu())
        features.append(feat.float().cpu())
        labels.append(torch.as_tensor(targets))
    if not logits:
        empty = np.zeros((0, 0), np.float32)
        return empty, np.zeros((0,), np.int64), empty
    return torch.cat(logits).numpy(), torch.cat(labels).numpy(), torch.cat(features).numpy()
