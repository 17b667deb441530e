"""Kendall rank loss with the sharpness relative to the logit scale (``k_scale="std"``): gradient where the
absolute form has none, equality with the absolute form at unit spread, scale invariance, the sign limit,
subsets, the consistency loss and the distill job config key."""
import pytest
import torch

from metakd.distill import rank_consistency, rank_loss
from metakd.engine.training.job_config import load_distill_config
from metakd.distill.rank import K_SCALES, standardize_scale
from metakd.errors import ConfigError, DataError


def test_gradient_survives_where_the_absolute_form_vanishes():
    # 5 channels (a 5-way head). The student swaps the teacher's first two channels with a gap of 10.
    t = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    s = torch.tensor([[30.0, 40.0, 20.0, 10.0, 0.0]], dtype=torch.float64, requires_grad=True)
    (g_abs,) = torch.autograd.grad(rank_loss(s, t, k=100.0), s)
    assert g_abs.abs().max().item() == 0.0  # sech²(100 · 10) underflows: the discordant pair gets nothing
    (g_rel,) = torch.autograd.grad(rank_loss(s, t, k=3.0, k_scale="std"), s)
    # the gap is 10 / std = 0.71 standard deviations: k_eff·Δs ≈ 2.1, tanh' ≈ 0.06 — a real gradient,
    # pointing at the fix: raise s_0, lower s_1
    assert g_rel[0, 0].item() < -1e-3 and g_rel[0, 1].item() > 1e-3
    # the same holds at any scale of the student logits (the gradient scales as 1 / scale)
    big = (s.detach() * 1000).requires_grad_(True)
    (g_big,) = torch.autograd.grad(rank_loss(big, t, k=3.0, k_scale="std"), big)
    assert torch.allclose(g_big * 1000, g_rel, rtol=1e-9, atol=1e-15)


def _unit_spread(x):
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.std(dim=1, correction=0, keepdim=True) + 0.3  # std exactly 1 (an offset changes nothing)


@pytest.mark.parametrize("form,kw", [("tanh", {"k": 3.0}), ("tanh", {"k": 100.0}), ("sigmoid", {"beta": 2.0})])
def test_equals_the_absolute_form_when_the_spread_is_one(form, kw):
    g = torch.Generator().manual_seed(0)
    s = _unit_spread(torch.randn(6, 9, generator=g, dtype=torch.float64)).requires_grad_(True)
    t = _unit_spread(torch.randn(6, 9, generator=g, dtype=torch.float64))
    assert torch.allclose(s.detach().std(dim=1, correction=0), torch.ones(6, dtype=torch.float64))
    rel = rank_loss(s, t, form, k_scale="std", reduction="none", **kw)
    ab = rank_loss(s, t, form, k_scale="absolute", reduction="none", **kw)
    assert torch.allclose(rel, ab, rtol=1e-12, atol=1e-14)
    (g_rel,) = torch.autograd.grad(rel.sum(), s)
    (g_abs,) = torch.autograd.grad(ab.sum(), s)
    # the gradient through the std removes the component along the centred row (‖s − s̄‖² = C here)
    c = s.detach() - s.detach().mean(dim=1, keepdim=True)
    expected = g_abs - (g_abs * c).sum(dim=1, keepdim=True) / s.shape[1] * c
    assert torch.allclose(g_rel, expected, rtol=1e-10, atol=1e-13)
    assert (g_rel * c).sum(dim=1).abs().max().item() < 1e-12  # no push to inflate the logits


def test_invariant_to_positive_scale_and_shift_of_either_argument():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(8, 12, generator=g, dtype=torch.float64), torch.randn(8, 12, generator=g, dtype=torch.float64)
    ref = rank_loss(s, t, k=3.0, k_scale="std", reduction="none")
    for a, b, c, d in [(0.01, 5.0, 1.0, 0.0), (100.0, -3.0, 7.0, 2.0), (1.0, 0.0, 0.05, -9.0)]:
        got = rank_loss(a * s + b, c * t + d, k=3.0, k_scale="std", reduction="none")
        assert torch.allclose(got, ref, rtol=1e-10, atol=1e-12)
    # the absolute form is not: at k = 3 shrinking the student by 100 changes the loss a lot
    ab = rank_loss(s, t, k=3.0, reduction="none")
    assert (rank_loss(0.01 * s, t, k=3.0, reduction="none") - ab).abs().max().item() > 0.1


def test_tends_to_the_exact_tau_as_k_grows():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(4, 40, generator=g, dtype=torch.float64), torch.randn(4, 40, generator=g, dtype=torch.float64)
    exact = rank_loss(s, t, form="sign", reduction="none")
    errors = [(rank_loss(s, t, k=k, k_scale="std", reduction="none") - exact).abs().max().item()
              for k in (10.0, 1e2, 1e3, 1e5)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 2e-3  # what is left: near-tied pairs
    assert torch.equal(rank_loss(s, t, form="sign", k_scale="std", reduction="none"), exact)
    # without near ties (permutations of 0..39: standardised gaps >= 1/11.5) k = 1e3 is the sign already
    p = torch.stack([torch.randperm(40, generator=g) for _ in range(4)]).double()
    q = torch.stack([torch.randperm(40, generator=g) for _ in range(4)]).double()
    assert torch.equal(rank_loss(p, q, k=1e3, k_scale="std", reduction="none"),
                       rank_loss(p, q, form="sign", reduction="none"))


@pytest.mark.parametrize("subset", ["top", "bottom"])
def test_subsets_standardise_the_channels_the_loss_sees(subset):
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(5, 30, generator=g, dtype=torch.float64), torch.randn(5, 30, generator=g, dtype=torch.float64)
    idx = t.topk(3, dim=1, largest=(subset == "top")).indices  # ceil(0.1 · 30) = 3 channels
    want = rank_loss(s.gather(1, idx), t.gather(1, idx), k=3.0, k_scale="std")
    got = rank_loss(s, t, k=3.0, subset=subset, fraction=0.1, k_scale="std")
    assert got.item() == pytest.approx(want.item(), rel=1e-12)


def test_gradcheck_and_constant_rows():
    g = torch.Generator().manual_seed(4)
    s = torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: rank_loss(a, b, k=2.0, k_scale="std"), (s, t))
    flat = torch.zeros(2, 5, dtype=torch.float64, requires_grad=True)  # std 0: the floor keeps it finite
    loss = rank_loss(flat, torch.randn(2, 5, generator=g, dtype=torch.float64), k=3.0, k_scale="std")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(flat.grad).all()


def test_consistency_loss_and_errors():
    g = torch.Generator().manual_seed(5)
    v = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    a = rank_consistency(v, k=3.0, k_scale="std")
    b = rank_consistency(10 * v, k=3.0, k_scale="std")
    assert a.item() == pytest.approx(b.item(), rel=1e-10)  # and a temperature would change nothing
    with pytest.raises(ConfigError, match="k_scale"):
        rank_loss(v[0], v[1], k_scale="relative")
    with pytest.raises(DataError):
        standardize_scale(v)
    assert K_SCALES == ("absolute", "std")


def test_distill_job_config_key():
    assert load_distill_config("distill_glyphs_kd_rank", [])["distill"]["rank_k_scale"] == "absolute"
    cfg = load_distill_config("distill_glyphs_kd_rank", ["distill.rank_k_scale=std", "distill.rank_k=3"])
    assert (cfg["distill"]["rank_k_scale"], cfg["distill"]["rank_k"]) == ("std", 3)
    with pytest.raises(ConfigError, match="rank_k_scale"):
        load_distill_config("distill_glyphs_kd_rank", ["distill.rank_k_scale=relative"])
