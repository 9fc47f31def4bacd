"""A new method is one class and one decorator: registered here, in the test, it trains through
`oaml train` and shows up in every method list, with no other edit to the project."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from oaml.cli import app
from oaml.models.checkpoint import read_checkpoint
from oaml.models.net import OamlNet
from oaml.recipe import outlier_methods, student_methods, teacher_methods
from oaml.registry import Registry
from oaml.training.methods import METHODS, Method
from tests.conftest import TINY

NAME = "test_label_smoothing"


class LabelSmoothedCE(Method):
    """Cross-entropy against labels smoothed by `smoothing` (Szegedy et al. 2016)."""

    def __init__(self, smoothing: float = 0.1) -> None:
        super().__init__()
        self.smoothing = smoothing

    def forward(self, model: OamlNet, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The smoothed cross-entropy of the ID batch."""
        logits = model(batch["images"])
        loss = F.cross_entropy(logits, batch["labels"], label_smoothing=self.smoothing)
        return {"loss": loss, "smoothed_ce": loss.detach()}


class OutlierNeeding(LabelSmoothedCE):
    """A stand-in method that declares it trains on outliers."""

    needs_outliers = True


@pytest.fixture
def methods(monkeypatch) -> Registry:
    """The method registry, with whatever a test registers removed after it."""
    # The Registry has no unregister: the test works on a copy of its entries, restored after.
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    return METHODS


@pytest.mark.slow
def test_a_method_defined_outside_the_project_trains_through_the_cli(methods, tmp_path, data_root):
    methods.register(NAME)(LabelSmoothedCE)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train", "--method", NAME, "--out", str(out), "--data-root", str(data_root),
            *TINY, "--set", "student.train.epochs=1",
            "--set", "student.train.loss={smoothing: 0.2}", "--device", "cpu",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = read_checkpoint(out / "checkpoint.pt")
    assert payload["lineage"]["method"] == NAME and payload["lineage"]["role"] == "student"
    assert payload["history"][0]["train_smoothed_ce"] > 0


def test_method_lists_come_from_the_registry(methods, tmp_path):
    methods.register(NAME)(OutlierNeeding)
    assert NAME in outlier_methods() and NAME in student_methods()
    assert NAME not in teacher_methods()
    assert {"oe_energy", "oaml"} <= outlier_methods() and teacher_methods() == {"oaml"}
    assert "teacher" not in student_methods()

    runner = CliRunner()
    refused = runner.invoke(app, ["demo", "--method", "nope", "--out", str(tmp_path / "d")])
    assert refused.exit_code == 2
    assert "nope" in refused.output and NAME in refused.output
    assert "teacher" not in refused.output.split(";")[0]
    bench = runner.invoke(
        app, ["bench", "quality", "--methods", f"{NAME},nope", "--out", str(tmp_path / "b")]
    )
    assert bench.exit_code == 2 and "['nope']" in bench.output and NAME in bench.output
    listing = runner.invoke(app, ["methods"])
    assert listing.exit_code == 0 and NAME in listing.output and "outliers" in listing.output
