"""The OAML method: cross-entropy, distillation from a frozen teacher, and mutual-information
upper bounds between outliers and the student's ID features (Gao et al., arXiv 2406.16525).

    L = CE + w_kd KL_logits + w_feat KL_feat + w_club CLUB(x_knn, f) + w_deep DeepCLUB(x_out, f)
        [+ w_energy energy margins on outlier images, OAL's extension]

Paper weights 1 / 4 / 8 / 0.1 / 0.2. x_knn: k-NN outlier embeddings in the teacher's feature
space; x_out: the outlier images (forward-diffused here; Stable Diffusion latents later).

How q (the CLUB variational nets) is trained, `club_fit`:
- "likelihood" (default): q maximises log q(f | x) on detached features while the student
  minimises the bound through f only, as CLUB is defined (Cheng et al. 2020);
- "joint": q and the student minimise the same total loss, as the authors' trainer does (it
  never runs the likelihood fit); kept to reproduce their numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oaml.losses.club import CLUB, club_bound, deep_club
from oaml.losses.energy import energy_margin_loss
from oaml.losses.kd import FeatureDistiller, kd_logits
from oaml.models.net import OamlNet
from oaml.training.methods.base import METHODS, Method, PrepareContext

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from oaml.config import TrainConfig


@METHODS.register("oaml")
class OAML(Method):
    """The OAML loss; `prepare` (or `attach`, given arrays) hands it the teacher's outputs and
    the k-NN outlier embeddings."""

    needs_outliers = True
    needs_teacher = True

    def __init__(
        self,
        kd: float = 4.0,
        kd_feat: float = 8.0,
        club: float = 0.1,
        deep_club: float = 0.2,
        energy: float = 0.0,
        m_in: float = -23.0,
        m_out: float = -5.0,
        temperature: float = 1.0,
        club_fit: str = "likelihood",
        club_hidden: int = 512,
        deep_club_hidden: int = 1024,
        club_lr_scale: float = 0.01,
    ) -> None:
        super().__init__()
        if club_fit not in {"likelihood", "joint"}:
            raise ValueError(f"club_fit must be 'likelihood' or 'joint', got {club_fit!r}")
        self.weights = {"kd": kd, "kd_feat": kd_feat, "club": club, "deep_club": deep_club}
        self.energy_weight, self.m_in, self.m_out = energy, m_in, m_out
        self.temperature, self.club_fit = temperature, club_fit
        self.club_hidden, self.deep_club_hidden = club_hidden, deep_club_hidden
        # The authors train the CLUB nets at lr 1e-4 beside the student's 1e-2.
        self.club_lr_scale = club_lr_scale

    def lr_scales(self) -> list[tuple[list[nn.Parameter], float]]:
        """The distiller at the base lr, the CLUB nets at `club_lr_scale` of it."""
        club = [*self.club_net.parameters(), *self.deep_club_net.parameters()]
        return [(list(self.distiller.parameters()), 1.0), (club, self.club_lr_scale)]

    def prepare(self, context: PrepareContext) -> Dataset:
        """Frozen-teacher outputs, cached once (sharded over the ranks of a data-parallel run),
        and k-NN outlier embeddings in the teacher's feature space, attached; each training
        sample then carries its teacher logits and features (read from the memory-mapped
        cache by the loader, so the cache never has to fit in device memory)."""
        from oaml.data.datasets import WithRows
        from oaml.data.teacher_cache import teacher_outputs

        cfg, spec, train_set = context.cfg, context.spec, context.train_set
        _check_teacher(cfg.teacher_checkpoint, spec.num_classes)
        cached = teacher_outputs(
            cfg.teacher_checkpoint,
            context.bench.train.imglist_path(context.data_root),
            context.bench.train.image_root(context.data_root),
            Path(cfg.teacher_checkpoint).parent / "cache",
            device=context.device,
            entries=train_set.entries,  # only the images this run trains on
            dist=context.dist,
            num_workers=cfg.num_workers,
        )
        labels = np.array([e.label for e in train_set.entries])
        knn = _knn_outliers(cached.features, labels, spec.num_classes, cfg)
        outliers = context.outliers
        self.attach(
            knn,
            teacher_dim=cached.features.shape[1],
            student_dim=context.model.feature_dim,
            outlier_dim=(outliers.latent_dim if outliers is not None else None)
            or spec.in_chans * spec.input_size**2,
        )
        return WithRows(
            train_set, {"teacher_logits": cached.logits, "teacher_features": cached.features}
        )

    def attach(
        self, knn_embeddings: np.ndarray, teacher_dim: int, student_dim: int, outlier_dim: int
    ) -> None:
        """Give the method its k-NN outlier embeddings and build its trainable parts (DT, CLUB
        nets). The teacher's outputs come with each batch (batch['teacher_logits'],
        batch['teacher_features'])."""
        # Not persistent: checkpoints keep only what trains (DT, CLUB nets).
        knn = torch.from_numpy(np.asarray(knn_embeddings)).float()
        self.register_buffer("knn", knn.reshape(-1, knn.shape[-1]), persistent=False)
        knn = self.knn
        self.distiller = FeatureDistiller(teacher_dim, student_dim)
        self.club_net = CLUB(knn.shape[1], student_dim, hidden=(self.club_hidden,))
        self.deep_club_net = deep_club(outlier_dim, student_dim, hidden=self.deep_club_hidden)

    def _mi(self, net: CLUB, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        n = min(len(x), len(y))
        x, y = x[:n].flatten(1), y[:n]
        if self.club_fit == "joint":
            return {"bound": net(x, y), "fit": torch.zeros((), device=y.device)}
        mu, logvar = net.mu(x), net.logvar(x)
        bound = club_bound(mu.detach(), logvar.detach(), y)
        # Per-dimension negative log-likelihood: same optimum, gradients that do not grow with D.
        fit = -net.log_likelihood(x, y.detach()) / y.shape[1]
        return {"bound": bound, "fit": fit}

    def forward(self, model: OamlNet, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, labels = batch["images"], batch["labels"]
        outliers = batch["outlier_images"]
        n = images.shape[0]
        use_energy = self.energy_weight > 0
        inputs = torch.cat([images, outliers]) if use_energy else images
        logits_all, features_all = model(inputs, return_feature=True)
        logits, features = logits_all[:n], features_all[:n]
        terms = {"ce": F.cross_entropy(logits, labels)}
        terms["kd"] = kd_logits(logits, batch["teacher_logits"], self.temperature)
        terms["kd_feat"] = self.distiller(batch["teacher_features"], features)
        pick = torch.randint(len(self.knn), (n,), device=self.knn.device)
        knn_mi = self._mi(self.club_net, self.knn[pick], features)
        # DeepCLUB's x: Stable Diffusion's final latents where the outliers have them (the
        # paper's x_sd), else the outlier pixels.
        deep_x = batch.get("outlier_latents")
        if deep_x is None:
            deep_x = outliers.float().div(255.0)
        deep_mi = self._mi(self.deep_club_net, deep_x, features)
        terms["club"], terms["deep_club"] = knn_mi["bound"], deep_mi["bound"]
        total = terms["ce"] + sum(self.weights[k] * terms[k] for k in self.weights)
        total = total + knn_mi["fit"] + deep_mi["fit"]
        terms["q_fit"] = knn_mi["fit"] + deep_mi["fit"]
        if use_energy:
            terms["energy"] = energy_margin_loss(
                logits, logits_all[n:], self.m_in, self.m_out, self.temperature
            )
            total = total + self.energy_weight * terms["energy"]
        return {"loss": total, **{k: v.detach() for k, v in terms.items()}}


def _check_teacher(checkpoint: str | None, num_classes: int) -> None:
    """The teacher checkpoint is set and classifies the student's classes."""
    from oaml.models.checkpoint import read_checkpoint

    if not checkpoint:
        raise ValueError(
            "this method distils from a teacher: set train.teacher_checkpoint to the "
            "checkpoint of `oaml train --method teacher`"
        )
    teacher_classes = read_checkpoint(checkpoint)["spec"]["num_classes"]
    if teacher_classes != num_classes:
        raise ValueError(
            f"the teacher has {teacher_classes} classes, the student "
            f"{num_classes}: train the teacher on the same benchmark"
        )


def _knn_outliers(
    features: np.ndarray, labels: np.ndarray, num_classes: int, cfg: TrainConfig
) -> np.ndarray:
    """Boundary samples of each class's teacher features (the paper's x_knn), per class."""
    from oaml.synthesis.knn import KnnConfig, sample_outliers

    rows = np.arange(len(labels))
    per_class = min(cfg.knn_features_per_class, int(np.bincount(labels).min()))
    grouped = np.stack([features[rows[labels == c][:per_class]] for c in range(num_classes)])
    knn_cfg = KnnConfig(k=min(300, per_class - 1), select=min(50, per_class), seed=cfg.seed)
    scale = np.linalg.norm(grouped, axis=-1).mean(axis=1)
    return sample_outliers(grouped, cfg.knn_outliers_per_class, knn_cfg, scale=scale)
