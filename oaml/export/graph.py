"""The exported computation: raw uint8 NHWC pixels in, logits and energy out.

Preprocessing lives in the graph so a client sends pixels, never normalised tensors; the energy is
the same function evaluation uses (oaml.scores.energy), so what is served is exactly
what was evaluated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oaml.models.net import OamlNet
from oaml.scores import energy, score_fn

# The attribute holding the feature score: int8 quantization finds its nodes by this scope.
FEATURE_SCORE_MODULE = "feature_score"


class DetectorGraph(nn.Module):
    """uint8 [N, H, W, C] -> (logits [N, K], energy [N]); any H, W is resized to the model's size.

    The in-graph resize is a torch op (bilinear, no antialiasing, whatever interpolation the
    model records), so any size runs. It is not oaml.imaging.resize, the PIL resize training,
    evaluation and the server's image endpoint use: the two agree exactly at the native size,
    where both are the identity, and differ elsewhere. Callers that want training's pixels for
    other sizes resize with oaml.imaging.resize before sending (the image endpoint does, with
    the interpolation the metadata records).
    """

    def __init__(
        self,
        model: OamlNet,
        input_size: int,
        temperature: float = 1.0,
        score: str = "ebo",
        feature_score: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.input_size = int(input_size)
        self.temperature = float(temperature)
        # A score other than the energy becomes a third output (oaml.contract.SCORE_OUTPUT); a
        # feature score (oaml.export.feature_scores) reads the penultimate features too.
        self.score = score
        self.feature_score = feature_score  # this name is FEATURE_SCORE_MODULE

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = images.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        x = F.interpolate(
            x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
        )
        if self.feature_score is not None:
            logits, features = self.model(x, return_feature=True)
            confidence = self.feature_score(logits, features)
            return logits, energy(logits, self.temperature), confidence
        logits = self.model(x)
        if self.score == "ebo":
            return logits, energy(logits, self.temperature)
        confidence = score_fn(self.score)(logits, self.temperature)
        return logits, energy(logits, self.temperature), confidence
