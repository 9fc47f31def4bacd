"""train_stage keeps a finished stage trained with the same settings and refuses other ones,
without touching data (a stand-in checkpoint, no data folder)."""

import pytest

from oaml.config import load_preset, to_dict, with_train
from oaml.models import ModelSpec
from oaml.models.checkpoint import save_checkpoint
from oaml.models.factory import build_model
from oaml.training.stage import train_stage


@pytest.fixture()
def finished(tmp_path):
    """A folder holding the final checkpoint of quick's cross-entropy student."""
    preset = load_preset("quick")
    model = preset.student.model
    spec = ModelSpec(arch=model.arch, num_classes=10, in_chans=1, width=model.width, input_size=28)
    save_checkpoint(
        tmp_path / "checkpoint.pt", build_model(spec), spec, epoch=3, history=[{"epoch": 3}],
        train_config=to_dict(preset.student.train), lineage={"method": "ce"},
    )  # fmt: skip
    return preset, tmp_path


def test_a_finished_stage_with_the_same_settings_is_kept(finished):
    preset, folder = finished
    result = train_stage(preset, "student", None, folder, method="ce")  # no data: not trained
    assert (result.checkpoint, result.epochs, result.history) == (
        folder / "checkpoint.pt", 3, [{"epoch": 3}]
    )  # fmt: skip


def test_a_finished_stage_with_other_settings_is_refused(finished):
    preset, folder = finished
    with pytest.raises(ValueError, match=r"other settings \(epochs, method\)"):
        train_stage(with_train(preset, "student", epochs=5), "student", None, folder, method="oaml")


def test_without_resume_training_starts_over(finished):
    preset, folder = finished
    with pytest.raises(ValueError, match="needs a data folder"):  # it went on to train
        train_stage(preset, "student", None, folder, resume=False, method="ce")
