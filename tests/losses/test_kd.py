import math

import pytest
import torch

from oaml.losses.kd import FeatureDistiller, kd_logits


def test_kd_is_zero_for_identical_logits():
    z = torch.randn(4, 5)
    assert kd_logits(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_by_hand():
    # teacher p = (0.5, 0.5), student q = (0.8, 0.2): KL(p||q) = 0.5 ln(0.5/0.8) + 0.5 ln(0.5/0.2)
    teacher = torch.log(torch.tensor([[0.5, 0.5]]))
    student = torch.log(torch.tensor([[0.8, 0.2]]))
    expected = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    assert kd_logits(student, teacher).item() == pytest.approx(expected, rel=1e-5)


def test_kd_temperature_scaling():
    teacher, student = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    p = torch.softmax(teacher / 2, -1)
    q = torch.softmax(student / 2, -1)
    expected = 4 * (p * (p.log() - q.log())).sum().item()
    assert kd_logits(student, teacher, temperature=2.0).item() == pytest.approx(expected, rel=1e-5)


def test_kd_gradient_reaches_only_the_student():
    teacher = torch.randn(3, 4, requires_grad=True)
    student = torch.randn(3, 4, requires_grad=True)
    kd_logits(student, teacher).backward()
    assert student.grad is not None and teacher.grad is None


def test_feature_distiller_shapes_and_paper_layout():
    distiller = FeatureDistiller(768, 512)
    layers = [type(m).__name__ for m in distiller.project]
    assert layers == ["BatchNorm1d", "Linear", "ReLU", "BatchNorm1d"]
    loss = distiller(torch.randn(8, 768), torch.randn(8, 512))
    assert loss.ndim == 0 and loss.item() >= 0
