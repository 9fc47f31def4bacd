"""The one interface every oaml model offers, over an unpatched timm network."""

from __future__ import annotations

import torch
from torch import nn


class OamlNet(nn.Module):
    """Wraps a timm model so that `forward(x, return_feature=True)` gives (logits, features).

    Inputs are raw pixels, NCHW: uint8 in [0, 255] or float in [0, 1]; the model normalises them
    with its own mean/std, so data loaders move compact uint8 tensors and every consumer (training,
    evaluation, the exported graph) preprocesses identically.
    Features are timm's pre-logits (pooled, after any final norm), so the same code path serves
    a ResNet student (512-d at full width) and a ViT teacher (768-d for ViT-B/16).
    """

    def __init__(
        self,
        backbone: nn.Module,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        mean_t = torch.tensor(mean if mean else (0.0,), dtype=torch.float32)
        std_t = torch.tensor(std if std else (1.0,), dtype=torch.float32)
        channels = getattr(backbone, "in_chans", None)
        for name, values in (("mean", mean_t), ("std", std_t)):
            if channels and values.numel() not in (1, channels):
                raise ValueError(
                    f"{name} has {values.numel()} values for a {channels}-channel model; "
                    "give one per channel or a single one"
                )
        # Not persistent: they come from the ModelSpec, which the checkpoint already records.
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw pixels (uint8 0..255 or float 0..1) to the normalised input of the backbone."""
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return (x - self.mean) / self.std

    @property
    def feature_dim(self) -> int:
        return int(self.backbone.num_features)

    @property
    def classifier(self) -> nn.Module:
        """The final classifier layer (features -> logits)."""
        return self.backbone.get_classifier()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward(
        self, x: torch.Tensor, return_feature: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        logits = self.classifier(features)
        return (logits, features) if return_feature else logits
