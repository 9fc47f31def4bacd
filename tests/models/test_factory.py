"""Every registered model: shapes, the (logits, features) interface, checkpoints that describe
themselves."""

import pytest
import timm
import torch

from oaml.models import MODELS, ModelSpec, create_model
from oaml.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from oaml.models.factory import build_model

OWN = [name for name in MODELS if name != "timm"]
TINY_VIT = {"img_size": 32, "patch_size": 8, "depth": 2}


@pytest.mark.parametrize("arch", OWN)
@pytest.mark.parametrize(("in_chans", "width", "side"), [(1, 0.25, 28), (3, 0.5, 64)])
def test_own_models_shapes(arch, in_chans, width, side):
    model = create_model(arch, num_classes=7, in_chans=in_chans, width=width).eval()
    logits, features = model(torch.randn(3, in_chans, side, side), return_feature=True)
    assert logits.shape == (3, 7)
    assert features.shape == (3, model.feature_dim) == (3, int(512 * width))
    assert torch.allclose(model.classifier(features), logits, atol=1e-6)


def test_small_input_stem_keeps_resolution():
    model = create_model("resnet18_32x32", 10, 3)
    assert model.backbone.conv1.stride == (1, 1) and model.backbone.conv1.kernel_size == (3, 3)
    assert isinstance(model.backbone.maxpool, torch.nn.Identity)
    assert create_model("resnet18_224x224", 10, 3).backbone.conv1.stride == (2, 2)


def test_width_scales_every_stage_including_the_stem():
    quarter = create_model("resnet18_32x32", 10, 1, width=0.25).backbone
    assert quarter.conv1.out_channels == 16 and quarter.layer1[0].downsample is None
    full = create_model("resnet18_32x32", 10, 3, width=1.0)
    # The standard ResNet-18 (11.17M parameters with a 10-class head).
    assert sum(p.numel() for p in full.parameters()) == 11_173_962


def test_mean_std_must_match_the_channels():
    with pytest.raises(ValueError, match="mean has 2 values for a 3-channel model"):
        create_model("resnet18_32x32", 10, 3, mean=(0.1, 0.2), std=(1.0,))


def test_timm_teacher_by_name():
    model = create_model("timm/vit_tiny_patch16_224", 5, 1, **TINY_VIT).eval()
    logits, features = model(torch.randn(2, 1, 32, 32), return_feature=True)
    assert logits.shape == (2, 5) and features.shape == (2, 192)
    assert torch.allclose(model.classifier(features), logits, atol=1e-5)


def test_timm_pretrained_file_loads_backbone_and_replaces_head(tmp_path):
    source = timm.create_model("vit_tiny_patch16_224", num_classes=1000, **TINY_VIT)
    weights = tmp_path / "vit.pth"
    torch.save(source.state_dict(), weights)
    model = create_model(
        "timm/vit_tiny_patch16_224", 4, 3, pretrained_file=str(weights), **TINY_VIT
    )
    assert torch.equal(model.backbone.patch_embed.proj.weight, source.patch_embed.proj.weight)
    assert model.classifier.out_features == 4


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(KeyError, match="known: .*resnet18_32x32"):
        create_model("resnet999", 10)


def test_checkpoint_round_trip(tmp_path):
    spec = ModelSpec(
        arch="resnet18_32x32",
        num_classes=3,
        in_chans=1,
        width=0.25,
        input_size=28,
        mean=(0.3,),
        std=(0.4,),
        class_names=("a", "b", "c"),
    )
    model = build_model(spec).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, spec, epoch=2, calibration={"threshold": 1.5})
    loaded, loaded_spec, payload = load_checkpoint(path)
    assert loaded_spec == spec
    assert payload["epoch"] == 2 and payload["calibration"]["threshold"] == 1.5
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))


def test_non_checkpoint_file_is_rejected(tmp_path):
    torch.save({"weights": 1}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not an oaml checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_spec_interpolation_defaults_for_old_checkpoints_and_is_checked():
    old = ModelSpec("resnet18_32x32", 3).to_dict()
    assert old.pop("interpolation") == "bilinear"
    assert ModelSpec.from_dict(old).interpolation == "bilinear"  # written before the field
    spec = ModelSpec("resnet18_32x32", 3, interpolation="bicubic")
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown interpolation 'area'"):
        ModelSpec("resnet18_32x32", 3, interpolation="area")
