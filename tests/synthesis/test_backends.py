"""Which backend a preset's `outliers:` section asks for."""

import pytest

from oaml.config import load_preset
from oaml.synthesis.backends import preset_request


@pytest.mark.parametrize(
    ("overrides", "backend"),
    [
        ([], "generator+forward-diffusion"),  # the quick preset's chosen source
        (["outliers.source=class-mix"], "class-mix"),
        (["outliers.source=null"], "forward-diffusion"),
        # Local Stable Diffusion weights win over a weight-free source...
        (['outliers.sd_checkpoint="/sd"'], "stable-diffusion"),
        # ...unless the source already combines them with another.
        (
            ['outliers.sd_checkpoint="/sd"', "outliers.source=stable-diffusion+class-mix"],
            "stable-diffusion+class-mix",
        ),
    ],
)
def test_the_preset_names_its_outlier_backend(overrides, backend, tmp_path):
    preset = load_preset("quick", overrides)
    found, request = preset_request(preset, tmp_path, tmp_path / "out")
    assert found == backend
    assert request.generator_epochs == preset.outliers.generator_epochs
    # The generator learns from the images the student trains on.
    assert request.generator_images == preset.student.train.train_subset
    assert (request.checkpoint is not None) == ("stable-diffusion" in backend)


def test_an_unknown_source_names_the_known_ones(tmp_path):
    preset = load_preset("quick", ["outliers.source=gan"])
    with pytest.raises(KeyError, match="class-mix"):
        preset_request(preset, tmp_path, tmp_path / "out")
