"""MSD consistency losses and the prediction-consistency metric."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from metakd.distill import cosine_consistency, kl_consistency, prediction_consistency, rank_consistency
from metakd.errors import ConfigError, DataError
from metakd.registry import LOSSES

LOSS_CASES = [
    (cosine_consistency, {"on": "prob"}),
    (cosine_consistency, {"on": "logit"}),
    (kl_consistency, {"direction": "mean_to_view"}),
    (kl_consistency, {"direction": "view_to_mean"}),
    (rank_consistency, {"form": "sigmoid"}),
    (rank_consistency, {"form": "tanh", "k": 1.0}),
]


def _views(n=4, q=6, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, q, c, generator=g)


@pytest.mark.parametrize("fn,kw", LOSS_CASES[:4])
def test_identical_views_give_zero(fn, kw):
    one = _views(1, 7, 5)
    v = one.repeat(3, 1, 1)
    assert fn(v, **kw).item() == pytest.approx(0.0, abs=1e-7)
    assert fn(one, **kw).item() == pytest.approx(0.0, abs=1e-7)  # a single view is consistent with itself


def test_rank_consistency_of_identical_views():
    # Exact (sign) form: tau = 1 without ties, so 0 exactly. Soft forms are 1 - tau~(v, v), which is
    # ~0 when the logits have no near-ties (|gap| >> 1/k).
    v = torch.linspace(-5, 5, 11)[torch.randperm(11)].repeat(3, 4, 1)
    assert rank_consistency(v, form="sign").item() == 0.0
    assert rank_consistency(v, form="tanh", k=100.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("fn,kw", LOSS_CASES)
def test_positive_for_different_views_and_gradients_reach_every_view(fn, kw):
    v = _views().requires_grad_()
    loss = fn(v, **kw)
    assert loss.item() > 1e-3
    (grad,) = torch.autograd.grad(loss, v)
    assert all(grad[j].abs().sum() > 0 for j in range(v.shape[0]))
    v2 = _views().requires_grad_()
    (grad_detached,) = torch.autograd.grad(fn(v2, detach_mean=True, **kw), v2)
    assert all(grad_detached[j].abs().sum() > 0 for j in range(v.shape[0]))


def test_cosine_consistency_matches_hand_formula():
    v = _views(3, 4, 6, seed=1)
    for on, temp in [("prob", 1.0), ("prob", 2.5), ("logit", 1.0)]:
        u = F.softmax(v / temp, -1) if on == "prob" else v
        mean = u.mean(0)
        expected = sum(1 - F.cosine_similarity(u[j], mean, dim=-1).mean() for j in range(3)) / 3
        assert cosine_consistency(v, on=on, temperature=temp).item() == pytest.approx(expected.item(), abs=1e-6)


def test_kl_consistency_matches_hand_formula_and_js_bound():
    v = 3 * _views(4, 5, 6, seed=2)
    p = F.softmax(v, -1)
    mean = p.mean(0)
    fwd = sum((mean * (mean / p[j]).log()).sum(-1).mean() for j in range(4)) / 4
    rev = sum((p[j] * (p[j] / mean).log()).sum(-1).mean() for j in range(4)) / 4
    assert kl_consistency(v).item() == pytest.approx(fwd.item(), rel=1e-5)
    assert kl_consistency(v, direction="view_to_mean").item() == pytest.approx(rev.item(), rel=1e-5)
    assert kl_consistency(50 * v, direction="view_to_mean").item() <= math.log(4) + 1e-6


def test_rank_consistency_matches_mean_of_rank_losses():
    from metakd.distill import rank_loss

    v = _views(3, 4, 8, seed=3)
    mean = v.mean(0)
    expected = sum(rank_loss(v[j], mean, "sigmoid", beta=2.0) for j in range(3)) / 3
    assert rank_consistency(v, form="sigmoid", beta=2.0).item() == pytest.approx(expected.item(), abs=1e-6)


def test_tensor_temperature_receives_gradient():
    v = _views()
    for fn in (cosine_consistency, kl_consistency):
        temp = torch.tensor(2.0, requires_grad=True)
        (g,) = torch.autograd.grad(fn(v, temperature=temp), temp)
        assert g.abs().item() > 0


def test_prediction_consistency_definition():
    v = _views(4, 6, 5, seed=4)
    p = F.softmax(v, -1)
    pairs = [F.cosine_similarity(p[j], p[l], dim=-1).mean() for j, l in itertools.combinations(range(4), 2)]
    assert prediction_consistency(v).item() == pytest.approx(torch.stack(pairs).mean().item(), abs=1e-6)
    assert prediction_consistency(v[:1].repeat(3, 1, 1)).item() == pytest.approx(1.0, abs=1e-6)
    confident = torch.stack([20 * torch.eye(5), 20 * torch.eye(5).roll(1, 1)])  # disagreeing one-hots
    assert prediction_consistency(confident).item() < 1e-6
    with pytest.raises(DataError, match="2 views"):
        prediction_consistency(v[:1])


def test_bad_inputs_and_registry():
    with pytest.raises(DataError, match="n_views, Q, C"):
        cosine_consistency(torch.randn(4, 5))
    with pytest.raises(ConfigError, match="on"):
        cosine_consistency(_views(), on="feature")
    with pytest.raises(ConfigError, match="temperature"):
        kl_consistency(_views(), temperature=0.0)
    with pytest.raises(ConfigError, match="direction"):
        kl_consistency(_views(), direction="both")
    for name, fn in [
        ("cosine_consistency", cosine_consistency),
        ("kl_consistency", kl_consistency),
        ("rank_consistency", rank_consistency),
    ]:
        assert LOSSES.get(name) is fn
