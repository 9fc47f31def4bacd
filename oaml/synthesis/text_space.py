"""DreamOOD's text-conditioned feature space: outlier embeddings in Stable Diffusion's token space.

Class anchors are the text encoder's input embeddings of the class names' tokens. A projection
head maps the frozen teacher's features into that space, trained so that
logits = cosine(head(feature), anchor) / 0.1 classify the ID data; the k-NN boundary sampler then
runs on the projected ID features, and its outliers, rescaled to each anchor's norm, replace the
class token in the generation prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class TextSpaceConfig:
    temperature: float = 0.1
    epochs: int = 20  # the original trains an image encoder 200 epochs; a head converges fast
    lr: float = 0.1
    batch_size: int = 256
    features_per_class: int = 500  # ID features kept per class for the sampler (DreamOOD: 500)
    seed: int = 0


def projection_head(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, out_dim))


def fit_projection(
    features: np.ndarray, labels: np.ndarray, anchors: torch.Tensor, cfg: TextSpaceConfig
) -> tuple[nn.Module, float]:
    """Train the head (SGD, cosine logits against the anchors); return it and its accuracy."""
    torch.manual_seed(cfg.seed)
    x = torch.from_numpy(np.asarray(features, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    targets = F.normalize(anchors.float(), dim=1)
    head = projection_head(x.shape[1], targets.shape[1])
    optimizer = torch.optim.SGD(head.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=5e-4)
    steps = cfg.epochs * max(1, int(np.ceil(len(x) / cfg.batch_size)))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        for batch in torch.randperm(len(x), generator=generator).split(cfg.batch_size):
            logits = F.normalize(head(x[batch]), dim=1) @ targets.T / cfg.temperature
            loss = F.cross_entropy(logits, y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        accuracy = float(((F.normalize(head(x), dim=1) @ targets.T).argmax(1) == y).float().mean())
    return head.eval(), accuracy


def text_space_outliers(
    teacher: str | Path,
    anchors: torch.Tensor,
    benchmark: str,
    data_root: str | Path,
    n_per_class: int,
    cfg: TextSpaceConfig = TextSpaceConfig(),
    device: str = "auto",
) -> tuple[np.ndarray, dict]:
    """(C, n_per_class, D) outlier embeddings in the anchors' space from the teacher's features
    of the ID training images, and a small report (head accuracy, features used)."""
    from oaml.data.benchmarks import get_benchmark
    from oaml.data.imglist import parse_imglist
    from oaml.data.teacher_cache import teacher_outputs
    from oaml.device import pick_device
    from oaml.synthesis.knn import KnnConfig, sample_outliers

    root = Path(data_root).expanduser().resolve()
    bench = get_benchmark(benchmark, root)
    bench.require(root, [bench.train])
    if anchors.shape[0] != bench.num_classes:
        raise ValueError(f"{anchors.shape[0]} anchors for {bench.num_classes} classes")
    entries = parse_imglist(bench.train.imglist_path(root))
    cached = teacher_outputs(
        teacher,
        bench.train.imglist_path(root),
        bench.train.image_root(root),
        Path(teacher).parent / "cache",
        device=pick_device(device),
    )
    labels = np.array([e.label for e in entries])
    head, accuracy = fit_projection(cached.features, labels, anchors, cfg)
    with torch.no_grad():
        projected = head(torch.from_numpy(cached.features.astype(np.float32))).numpy()
    per_class = min(cfg.features_per_class, int(np.bincount(labels).min()))
    grouped = np.stack([projected[labels == c][:per_class] for c in range(bench.num_classes)])
    knn = KnnConfig(k=min(300, per_class - 1), select=min(50, per_class), seed=cfg.seed)
    scale = anchors.float().norm(dim=1).numpy()
    outliers = sample_outliers(grouped, n_per_class, knn, scale=scale)
    report = {"head_accuracy": accuracy, "features_per_class": per_class, "teacher": str(teacher)}
    return outliers, report
