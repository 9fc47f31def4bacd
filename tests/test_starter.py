"""`oaml data preset`: a starting preset for an imported benchmark, sized to a budget from
training speed measured on this machine."""

from __future__ import annotations

import pytest
from PIL import Image

from oaml.config import load_preset
from oaml.data.importer import ImportConfig, run_import
from tests.conftest import oaml_in_process
from tests.data.test_importer import _crops, _save

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_benchmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("starter")
    for label, picture in enumerate(("chelsea", "coffee", "rocket")):
        for k, crop in enumerate(_crops(picture, 12, label)):
            _save(root / "src" / picture / f"{k}.png", Image.fromarray(crop))
    run_import(ImportConfig(source=str(root / "src"), name="small", root=root / "data",
                            workers=1, far_count=20))  # fmt: skip
    return root / "data"


def _preset(data, tmp_path, minutes: str):
    out = tmp_path / f"small-{minutes}.yaml"
    result = oaml_in_process(
        "data", "preset", "--benchmark", "small", "--root", str(data), "--minutes", minutes,
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"--preset {out}" in result.stdout
    text = out.read_text()
    assert text.startswith("# Starting preset for small") and "images/s" in text
    return load_preset(str(out))


def test_a_bigger_budget_buys_a_bigger_recipe(small_benchmark, tmp_path):
    tight = _preset(small_benchmark, tmp_path, "0.02")
    roomy = _preset(small_benchmark, tmp_path, "120")
    for preset in (tight, roomy):
        assert preset.benchmark == "small" and preset.data_root == str(small_benchmark)
        assert preset.student.train.epochs >= 1 and preset.teacher.train.epochs >= 1
    assert roomy.student.model.width >= tight.student.model.width
    assert roomy.student.train.epochs >= tight.student.train.epochs
    assert (roomy.student.train.epochs, roomy.student.model.width) != (
        tight.student.train.epochs, tight.student.model.width,
    )  # fmt: skip


def test_no_budget_is_refused(small_benchmark):
    result = oaml_in_process(
        "data", "preset", "--benchmark", "small", "--root", str(small_benchmark), "--minutes", "0"
    )
    assert result.returncode == 2 and "positive budget" in result.stderr


@pytest.mark.gpu
def test_the_budget_is_measured_on_the_gpu(small_benchmark):
    """On a GPU node the preset is sized from CUDA training steps (`make gpu-check`)."""
    import torch

    from oaml.starter import starter_preset

    _, plan = starter_preset("small", small_benchmark, 5.0)
    assert torch.cuda.is_available() and plan.student_images_per_s > 0
