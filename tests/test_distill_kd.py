"""Hinton KD loss: hand formula, temperature scaling, gradients to learnable temperatures."""
import math

import pytest
import torch

from metakd.distill import kd_loss
from metakd.errors import ConfigError, DataError
from metakd.registry import LOSSES


def _hand_kd(s, t, ts, tt):
    """Sum over classes, mean over rows, of p_t log(p_t / p_s) · ts · tt, with explicit loops."""
    total = 0.0
    for row_s, row_t in zip(s.tolist(), t.tolist()):
        zs = sum(math.exp(v / ts) for v in row_s)
        zt = sum(math.exp(v / tt) for v in row_t)
        for a, b in zip(row_s, row_t):
            ps, pt = math.exp(a / ts) / zs, math.exp(b / tt) / zt
            total += pt * math.log(pt / ps)
    return total / len(s) * ts * tt


def test_matches_hand_formula_with_separate_temperatures():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 7, generator=g, dtype=torch.float64), torch.randn(6, 7, generator=g, dtype=torch.float64)
    for ts, tt in [(1.0, 1.0), (4.0, 4.0), (2.0, 5.0), (7.5, 1.5)]:
        assert kd_loss(s, t, ts, tt).item() == pytest.approx(_hand_kd(s, t, ts, tt), rel=1e-10)


def test_t_squared_scaling_and_scale_options():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(5, 10, generator=g), torch.randn(5, 10, generator=g)
    raw = kd_loss(s, t, 4.0, scale="none")
    assert torch.allclose(kd_loss(s, t, 4.0), 16.0 * raw)
    raw2 = kd_loss(s, t, 2.0, 3.0, scale="none")
    assert torch.allclose(kd_loss(s, t, 2.0, 3.0), 6.0 * raw2)
    assert torch.allclose(kd_loss(s, t, 2.0, 3.0, scale="student"), 4.0 * raw2)
    assert torch.allclose(kd_loss(s, t, 2.0, 3.0, scale="teacher"), 9.0 * raw2)


def test_high_temperature_limit_is_logit_matching():
    # With T² scaling the gradient tends to ((s - mean s) - (t - mean t)) / (C·B): independent of T.
    g = torch.Generator().manual_seed(2)
    s = torch.randn(4, 8, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 8, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(kd_loss(s, t, 1000.0), s)
    expected = ((s - s.mean(1, keepdim=True)) - (t - t.mean(1, keepdim=True))).detach() / (8 * 4)
    assert torch.allclose(grad, expected, atol=1e-4)


def test_zero_for_identical_logits_and_positive_otherwise():
    s = torch.randn(3, 5)
    assert kd_loss(s, s.clone()).abs().item() < 1e-6
    assert kd_loss(s, s + torch.randn(3, 5)).item() > 0


@pytest.mark.parametrize("shape", [(), (1,), (5,), (5, 1)])
def test_gradient_flows_to_tensor_temperatures(shape):
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(5, 6, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g, dtype=torch.float64)
    ts = (2.0 + torch.rand(shape, generator=g, dtype=torch.float64)).requires_grad_()
    tt = (3.0 + torch.rand(shape, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: kd_loss(s, t, a, b), (ts, tt))
    grad_ts, grad_tt = torch.autograd.grad(kd_loss(s, t, ts, tt), (ts, tt))
    assert grad_ts.abs().sum() > 0 and grad_tt.abs().sum() > 0


def test_per_sample_temperature_equals_rowwise_scalar():
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    temps = torch.tensor([[1.5], [3.0], [6.0]])
    per_row = kd_loss(s, t, temps, reduction="none")
    for i in range(3):
        assert per_row[i].item() == pytest.approx(kd_loss(s[i : i + 1], t[i : i + 1], float(temps[i])).item(), rel=1e-5)


def test_reductions():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    per = kd_loss(s, t, reduction="none")
    assert per.shape == (4,)
    assert torch.allclose(kd_loss(s, t, reduction="sum"), per.sum())
    assert torch.allclose(kd_loss(s, t, reduction="mean"), per.mean())
    assert torch.allclose(kd_loss(s, t), per.mean())


def test_bad_input_errors_and_registry():
    s = torch.randn(2, 3)
    with pytest.raises(DataError, match="same shape"):
        kd_loss(s, torch.randn(2, 4))
    with pytest.raises(DataError, match=r"\(B, C\)"):
        kd_loss(torch.randn(6), torch.randn(6))
    with pytest.raises(ConfigError, match="t_student"):
        kd_loss(s, s, 0.0)
    with pytest.raises(ConfigError, match="reduction"):
        kd_loss(s, s, reduction="avg")
    with pytest.raises(ConfigError, match="scale"):
        kd_loss(s, s, scale="square")
    with pytest.raises(DataError, match="t_teacher"):
        kd_loss(s, s, 2.0, torch.ones(3, 1))
    assert LOSSES.get("kd") is kd_loss
