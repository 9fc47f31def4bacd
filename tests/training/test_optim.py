import math

import pytest

from oaml.config import OptimConfig
from oaml.models import create_model
from oaml.training.optim import build_optimizer, cosine_factor


def test_cosine_runs_from_one_to_the_floor():
    assert cosine_factor(0, 100, 0, 1e-3) == pytest.approx(1.0)
    assert cosine_factor(50, 100, 0, 0.0) == pytest.approx(0.5)
    assert cosine_factor(100, 100, 0, 1e-3) == pytest.approx(1e-3)
    assert cosine_factor(25, 100, 0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_warmup_is_linear():
    assert [cosine_factor(s, 100, 4, 0.0) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_backbone_and_head_learning_rates():
    model = create_model("resnet18_32x32", 10, 1, 0.125)
    cfg = OptimConfig(name="adam", lr=1e-4, backbone_lr=1e-6)
    optimizer = build_optimizer(model, None, cfg)
    head, backbone = optimizer.param_groups
    assert head["lr"] == 1e-4 and backbone["lr"] == 1e-6
    assert {id(p) for p in head["params"]} == {id(p) for p in model.classifier.parameters()}


def test_sgd_is_nesterov_as_the_paper():
    model = create_model("resnet18_32x32", 10, 1, 0.125)
    optimizer = build_optimizer(model, None, OptimConfig())
    group = optimizer.param_groups[0]
    assert group["nesterov"] and group["momentum"] == 0.9 and group["weight_decay"] == 5e-4
