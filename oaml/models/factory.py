"""One factory over a name registry; `ModelSpec` is what a checkpoint records to rebuild a model.

Names: `resnet18_32x32` (3x3 stride-1 stem, no max-pool: the OpenOOD student for 32x32-class
inputs), `resnet18_224x224` (the standard stem), and `timm/<any timm model name>` (teachers).
Weights come from a local `pretrained_file`, which the training stage may fill from the Hugging
Face Hub cache (`model.pretrained`, oaml.models.hub).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import timm
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from oaml.imaging import DEFAULT_INTERPOLATION, check_interpolation
from oaml.models.net import OamlNet
from oaml.registry import Registry

MODELS: Registry = Registry("model")
TIMM_PREFIX = "timm/"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model and feed it: architecture, classes, preprocessing."""

    arch: str
    num_classes: int
    in_chans: int = 3
    width: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: int = 32
    # One value per channel, or one for all channels.
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    class_names: tuple[str, ...] = ()
    # How images are resized to input_size (oaml.imaging.resize); checkpoints written before it
    # existed load with the default, which is what they were trained with.
    interpolation: str = DEFAULT_INTERPOLATION

    def __post_init__(self) -> None:
        check_interpolation(self.interpolation)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        data["class_names"] = list(self.class_names)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        data = dict(data)
        for key in ("mean", "std", "class_names"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)


def _scaled(width: float, base: int = 64) -> int:
    """Channels for a width multiplier: a multiple of 8 for fast kernels, and at least 16,
    because PyTorch 2.14's CPU kernels (oneDNN) corrupt the heap in the backward pass of an
    8-to-16-channel 1x1 stride-2 convolution in channels_last at inputs of 48 px or more."""
    return max(16, round(base * width / 8) * 8)


def _resnet18(
    num_classes: int, in_chans: int, width: float, small_stem: bool, **kwargs: Any
) -> ResNet:
    """timm's ResNet-18 with every width (stem included) scaled by `width`.

    timm's single-conv stem is fixed at 64 channels, so the stem and the first block (which
    would otherwise project 64 -> c0) are rebuilt at c0 channels; the blocks stay timm's.
    """
    channels = tuple(_scaled(width, c) for c in (64, 128, 256, 512))
    net = ResNet(
        BasicBlock,
        layers=(2, 2, 2, 2),
        num_classes=num_classes,
        in_chans=in_chans,
        channels=channels,
        **kwargs,
    )
    stem = channels[0]
    if small_stem:
        net.conv1 = nn.Conv2d(in_chans, stem, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif stem != net.conv1.out_channels:
        net.conv1 = nn.Conv2d(in_chans, stem, kernel_size=7, stride=2, padding=3, bias=False)
    if stem != net.bn1.num_features:
        net.bn1 = nn.BatchNorm2d(stem)
        net.layer1[0] = BasicBlock(stem, stem)
        net.layer1[0].zero_init_last()
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return net


@MODELS.register("resnet18_32x32")
def resnet18_32x32(num_classes: int, in_chans: int = 3, width: float = 1.0, **kwargs: Any):
    """ResNet-18 for small inputs: 3x3 stride-1 stem without max-pool (as OpenOOD's student)."""
    return _resnet18(num_classes, in_chans, width, small_stem=True, **kwargs)


@MODELS.register("resnet18_224x224")
def resnet18_224x224(num_classes: int, in_chans: int = 3, width: float = 1.0, **kwargs: Any):
    """ResNet-18 with the standard 7x7 stride-2 stem and max-pool (ImageNet-size inputs)."""
    return _resnet18(num_classes, in_chans, width, small_stem=False, **kwargs)


@MODELS.register("timm")
def timm_model(
    num_classes: int,
    in_chans: int = 3,
    width: float = 1.0,
    model_name: str = "vit_base_patch16_224",
    pretrained_file: str | None = None,
    **kwargs: Any,
):
    """Any timm model by name; `pretrained_file` loads local weights (head replaced if needed)."""
    if width != 1.0:
        raise ValueError(f"width multipliers apply to oaml's ResNets, not to timm/{model_name}")
    extra: dict[str, Any] = {}
    if pretrained_file:
        extra = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(pretrained_file)}}
    return timm.create_model(
        model_name, num_classes=num_classes, in_chans=in_chans, **extra, **kwargs
    )


def create_model(
    arch: str,
    num_classes: int,
    in_chans: int = 3,
    width: float = 1.0,
    pretrained_file: str | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    **kwargs: Any,
) -> OamlNet:
    """Build a registered architecture (or `timm/<name>`) wrapped as an OamlNet.

    `mean`/`std` are the input normalisation the model applies to raw pixels (default: none).
    """
    if arch.startswith(TIMM_PREFIX):
        factory, kwargs = MODELS.get("timm"), {"model_name": arch[len(TIMM_PREFIX) :], **kwargs}
        if pretrained_file:
            kwargs["pretrained_file"] = pretrained_file
    else:
        factory = MODELS.get(arch)
        if pretrained_file:
            raise ValueError(
                f"{arch} has no pretrained weights; use train.init_checkpoint to start from "
                "an oaml checkpoint"
            )
    backbone = factory(num_classes=num_classes, in_chans=in_chans, width=width, **kwargs)
    return OamlNet(backbone, mean, std)


def build_model(spec: ModelSpec, pretrained_file: str | None = None) -> OamlNet:
    """Build the model a spec describes (random weights unless `pretrained_file`)."""
    return create_model(
        spec.arch,
        spec.num_classes,
        spec.in_chans,
        spec.width,
        pretrained_file=pretrained_file,
        mean=spec.mean,
        std=spec.std,
        **spec.kwargs,
    )
