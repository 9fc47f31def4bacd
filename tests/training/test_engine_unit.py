"""The training loop on small in-memory data: guards that protect a run from bad settings."""

import pytest
import torch
from torch.utils.data import TensorDataset

from oaml.config import OptimConfig, TrainConfig
from oaml.models import ModelSpec
from oaml.models.factory import build_model
from oaml.training.engine import train
from oaml.training.methods import create_method

SPEC = ModelSpec(arch="resnet18_32x32", num_classes=3, in_chans=1, width=0.125, input_size=8)


def _data(n: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=generator)
    return TensorDataset(images, torch.arange(n) % 3)


def _run(tmp_path, resume=False, **overrides):
    cfg = TrainConfig(epochs=2, batch_size=8, augment=(), optim=OptimConfig(lr=0.05), **overrides)
    return train(
        build_model(SPEC), SPEC, create_method("ce"), _data(32), _data(12), cfg, tmp_path,
        torch.device("cpu"), resume=resume,
    )  # fmt: skip


def test_calibrated_threshold_keeps_95_percent_of_validation(tmp_path):
    from oaml.contract import Calibration
    from oaml.models.checkpoint import load_checkpoint
    from oaml.scores import energy

    result = _run(tmp_path)
    model, _, payload = load_checkpoint(result.checkpoint)
    with torch.no_grad():
        val_energy = energy(model(_data(12).tensors[0]))
    calibration = Calibration.from_dict(payload["calibration"])
    assert "energy_threshold" in payload["calibration"]  # energy units, as the graph outputs
    assert calibration.images == 12 and calibration.split == "val"
    threshold = calibration.energy_threshold
    # 12 validation images: keeping at least 95% means keeping all 12, so the threshold is the
    # highest energy: everything is kept, and lowering it at all flags one image as OOD.
    assert bool((val_energy <= threshold + 1e-4).all())
    assert float((val_energy < threshold - 1e-4).float().mean()) == pytest.approx(11 / 12)
    assert [h["epoch"] for h in payload["history"]] == [1, 2]


def test_resume_with_other_settings_is_refused(tmp_path):
    _run(tmp_path)
    with pytest.raises(ValueError, match="other training settings \\(batch_size\\)"):
        train(
            build_model(SPEC), SPEC, create_method("ce"), _data(32), None,
            TrainConfig(epochs=2, batch_size=4, augment=(), optim=OptimConfig(lr=0.05)),
            tmp_path, torch.device("cpu"), resume=True,
        )  # fmt: skip


def test_fewer_images_than_a_batch_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(
            build_model(SPEC), SPEC, create_method("ce"), _data(5), None,
            TrainConfig(epochs=1, batch_size=8), tmp_path, torch.device("cpu"),
        )  # fmt: skip
