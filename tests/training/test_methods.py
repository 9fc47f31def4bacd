"""Training methods through the one loop: the energy outlier-exposure baseline on real data."""

import numpy as np
import pytest
import torch

from oaml.models.checkpoint import read_checkpoint
from oaml.models.factory import create_model
from oaml.training.methods import METHODS, PrepareContext, create_method
from tests.conftest import TINY, oaml_in_process, run_oaml


def test_every_method_returns_a_total_and_named_terms():
    model = create_model("resnet18_32x32", 3, 1, 0.125)
    batch = {
        "images": torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8),
        "labels": torch.tensor([0, 1, 2, 0]),
        "outlier_images": torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8),
    }
    for name in METHODS:
        method = create_method(name)
        if method.needs_teacher:
            continue  # needs attached teacher outputs: tests/training/test_oaml_method.py
        terms = method(model, batch)
        assert terms["loss"].requires_grad and terms["loss"].ndim == 0
        assert len(terms) >= 2


def test_default_preparation_trains_on_the_train_set_as_is():
    train_set = [("image", 0)]
    context = PrepareContext(None, None, None, train_set, None, None, torch.device("cpu"))
    assert create_method("ce").prepare(context) is train_set


def test_energy_term_pushes_outlier_energy_up():
    """A few steps on the loss raise outlier energies towards m_out: the margin term shrinks."""
    torch.manual_seed(0)
    model = create_model("resnet18_32x32", 3, 1, 0.125)
    method = create_method("oe_energy", {"weight": 1.0, "m_in": -30.0, "m_out": 2.0})
    outliers = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    batch = {"images": outliers[:2], "labels": torch.tensor([0, 1]), "outlier_images": outliers}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    margins = []
    for _ in range(6):
        terms = method(model, batch)
        margins.append(terms["energy"].item())
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
    assert margins[-1] < margins[0]


def test_unknown_loss_parameter_is_named():
    with pytest.raises(ValueError, match="oe_energy.*margin_in"):
        create_method("oe_energy", {"margin_in": 3})


@pytest.mark.slow
def test_outlier_methods_end_to_end(tmp_path, data_root):
    run_oaml(
        "synthesize", "--data-root", str(data_root), "--out", str(tmp_path / "fd"),
        "--count", "600",
    )  # fmt: skip
    out = tmp_path / "oe"
    run_oaml(
        "train", "--method", "oe_energy", "--out", str(out), "--data-root", str(data_root),
        *TINY, "--set", "student.train.epochs=1", "--set", f"student.train.outliers={tmp_path}/fd",
    )  # fmt: skip
    payload = read_checkpoint(out / "checkpoint.pt")
    assert payload["lineage"]["method"] == "oe_energy"
    assert "train_energy" in payload["history"][0]
    missing = oaml_in_process(
        "train", "--method", "oe_energy", "--out", str(tmp_path / "x"),
        "--data-root", str(data_root), *TINY,
    )  # fmt: skip
    assert missing.returncode == 2 and "train.outliers" in missing.stderr

    # The OAML method: a tiny teacher, then the student distilled from it with both outliers.
    run_oaml(
        "train", "--method", "teacher", "--out", str(tmp_path / "teacher"),
        "--data-root", str(data_root), "--set", "teacher.train.train_subset=300",
        "--set", "teacher.train.epochs=1",
        "--set", "teacher.model.arch=timm/vit_tiny_patch16_224", "--set", "teacher.model.width=1.0",
        "--set", "teacher.model.kwargs={img_size: 28, patch_size: 7, depth: 1}",
    )  # fmt: skip
    teacher = tmp_path / "teacher" / "checkpoint.pt"
    common = [
        "--data-root", str(data_root), *TINY, "--set", "student.train.epochs=1",
        "--set", f"student.train.outliers={tmp_path}/fd",
        "--set", "student.train.knn_outliers_per_class=20",
    ]  # fmt: skip
    no_teacher = oaml_in_process("train", "--method", "oaml", "--out", str(tmp_path / "y"), *common)
    assert no_teacher.returncode == 2 and "teacher_checkpoint" in no_teacher.stderr
    run_oaml(
        "train", "--method", "oaml", "--out", str(tmp_path / "oaml"), *common,
        "--set", f"student.train.teacher_checkpoint={teacher}",
    )  # fmt: skip
    history = read_checkpoint(tmp_path / "oaml" / "checkpoint.pt")["history"][0]
    for term in ("ce", "kd", "kd_feat", "club", "deep_club", "q_fit"):
        assert np.isfinite(history[f"train_{term}"])
    assert list((tmp_path / "teacher" / "cache").glob("teacher_*/complete.json"))
