"""The OAML loss module: every term present, gradients where they belong, clear errors."""

import numpy as np
import pytest
import torch

from oaml.models.factory import create_model
from oaml.training.methods import create_method


def _method(**params):
    rng = np.random.default_rng(0)
    method = create_method("oaml", params)
    method.attach(
        knn_embeddings=rng.standard_normal((3, 5, 12)).astype(np.float32),
        teacher_dim=12,
        student_dim=64,
        outlier_dim=1 * 8 * 8,
    )
    return method


def _batch():
    generator = torch.Generator().manual_seed(1)
    return {
        "images": torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8),
        "labels": torch.tensor([0, 1, 2, 0, 1, 2]),
        "teacher_logits": torch.randn(6, 3, generator=generator),
        "teacher_features": torch.randn(6, 12, generator=generator),
        "outlier_images": torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8),
    }


@pytest.mark.parametrize("club_fit", ["likelihood", "joint"])
def test_all_terms_and_finite_gradients(club_fit):
    torch.manual_seed(0)
    model = create_model("resnet18_32x32", 3, 1, 0.125)
    method = _method(club_fit=club_fit, energy=0.1)
    terms = method(model, _batch())
    assert {"ce", "kd", "kd_feat", "club", "deep_club", "energy", "q_fit"} <= set(terms)
    terms["loss"].backward()
    for module in (model, method.distiller, method.club_net, method.deep_club_net):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)


def test_likelihood_fit_keeps_the_bound_from_training_q():
    """With club_fit=likelihood the bound trains the student's features only, the fit q only."""
    torch.manual_seed(0)
    model = create_model("resnet18_32x32", 3, 1, 0.125)
    method = _method()
    _, features = model(_batch()["images"], return_feature=True)
    mi = method._mi(method.club_net, method.knn[:6], features)
    q_params = list(method.club_net.parameters())
    assert all(g is None for g in torch.autograd.grad(mi["bound"], q_params, allow_unused=True))
    (to_features,) = torch.autograd.grad(mi["bound"], features, retain_graph=True)
    assert to_features.abs().sum() > 0
    fit_grads = torch.autograd.grad(mi["fit"], [features, *q_params], allow_unused=True)
    assert fit_grads[0] is None and all(g is not None for g in fit_grads[1:])


def test_weights_scale_the_total():
    torch.manual_seed(0)
    model = create_model("resnet18_32x32", 3, 1, 0.125).eval()
    plain = _method(kd=0.0, kd_feat=0.0, club=0.0, deep_club=0.0)
    terms = plain(model, _batch())
    assert (terms["loss"] - terms["q_fit"]).item() == pytest.approx(terms["ce"].item(), rel=1e-5)


def test_optimizer_gets_the_paper_lr_for_club_nets():
    from oaml.config import OptimConfig
    from oaml.training.optim import build_optimizer

    model = create_model("resnet18_32x32", 3, 1, 0.125)
    optimizer = build_optimizer(model, _method(), OptimConfig(lr=0.01))
    lrs = sorted(g["lr"] for g in optimizer.param_groups)
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(0.01)


def test_bad_club_fit_is_named():
    with pytest.raises(ValueError, match="club_fit"):
        create_method("oaml", {"club_fit": "magic"})
