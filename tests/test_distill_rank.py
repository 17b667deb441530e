"""Kendall rank loss: exactness against scipy and pair counting, invariances, gradient balance,
chunked = naive (values and gradients), subsets, and bounded saved memory."""
import itertools

import pytest
import scipy.stats
import torch

from metakd.distill import (
    DEFAULT_MEMORY_BUDGET,
    kd_loss,
    kendall_tau,
    pairwise_tau,
    pairwise_tau_reference,
    plan_chunks,
    rank_loss,
    subset_indices,
)
from metakd.errors import ConfigError, DataError
from metakd.registry import LOSSES


def _exact_tau(a, b):
    """Kendall's tau-a by counting concordant minus discordant pairs."""
    n = len(a)
    score = 0
    for i, j in itertools.combinations(range(n), 2):
        x, y = a[i] - a[j], b[i] - b[j]
        score += (x > 0) - (x < 0) if y > 0 else ((x < 0) - (x > 0) if y < 0 else 0)
    return 2.0 * score / (n * (n - 1))


def test_sign_form_equals_exact_pair_count_and_scipy():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 30, generator=g, dtype=torch.float64), torch.randn(5, 30, generator=g, dtype=torch.float64)
    b[0] = a[0] + 0.3 * b[0]  # a strongly correlated row too
    tau = kendall_tau(a, b)
    for i in range(5):
        exact = _exact_tau(a[i].tolist(), b[i].tolist())
        assert tau[i].item() == pytest.approx(exact, abs=1e-12)
        assert tau[i].item() == pytest.approx(scipy.stats.kendalltau(a[i].numpy(), b[i].numpy())[0], abs=1e-12)


def test_tanh_form_at_large_k_matches_scipy():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 40, generator=g, dtype=torch.float64), torch.randn(4, 40, generator=g, dtype=torch.float64)
    soft = kendall_tau(a, b, form="tanh", k=1e4)
    for i in range(4):
        exact = scipy.stats.kendalltau(a[i].numpy(), b[i].numpy())[0]
        assert soft[i].item() == pytest.approx(exact, abs=2e-3)


def test_kendall_tau_1d_input():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert kendall_tau(a, a).dim() == 0 and kendall_tau(a, a).item() == 1.0
    assert kendall_tau(a, -a).item() == -1.0


@pytest.mark.parametrize("form", ["sign", "tanh", "sigmoid"])
def test_identical_order_gives_zero_and_reversed_gives_two(form):
    t = torch.linspace(-10, 10, 21).repeat(3, 1)  # gaps of 1: tanh(100) == 1 in float32
    s = 0.5 * t + 1.0  # same order, different scale
    kwargs = {"beta": 50.0} if form == "sigmoid" else {}
    assert rank_loss(s, t, form, **kwargs).item() == pytest.approx(0.0, abs=1e-6)
    assert rank_loss(-s, t, form, **kwargs).item() == pytest.approx(2.0, abs=1e-6)


def test_invariance_to_teacher_scale_and_shift():
    # Hard form: exactly invariant. tanh form (k = 100) with unit-scale logits: stated tolerance 5e-3
    # for positive scale factors in [0.5, 5]; measured deviations are ~3e-4 at C = 10, 100, 1000.
    g = torch.Generator().manual_seed(2)
    for c in (10, 100):
        t = torch.randn(32, c, generator=g)
        s = t + torch.randn(32, c, generator=g)
        hard, soft = rank_loss(s, t, "sign"), rank_loss(s, t, "tanh")
        for factor, shift in [(0.5, 0.0), (2.0, 3.0), (5.0, -7.0), (1.0, 100.0)]:
            t2 = factor * t + shift
            assert rank_loss(s, t2, "sign").item() == hard.item()
            assert abs(rank_loss(s, t2, "tanh").item() - soft.item()) < 5e-3


def test_rank_loss_moves_gradient_to_low_probability_channels():
    # Five confident teacher channels, 45 low-probability ones whose order carries the information.
    g = torch.Generator().manual_seed(3)
    B, C, H = 64, 50, 5
    t = torch.empty(B, C)
    t[:, :H] = torch.linspace(10, 6, H)
    t[:, H:] = torch.linspace(0, -4, C - H)
    s = (t + 0.5 * torch.randn(B, C, generator=g)).requires_grad_()
    low = torch.arange(C) >= H

    def low_share(loss):
        (grad,) = torch.autograd.grad(loss, s)
        return (grad[:, low].norm() / grad.norm()).item()

    kl_share = low_share(kd_loss(s, t, 4.0))
    for form in ("tanh", "sigmoid"):
        rank_share = low_share(rank_loss(s, t, form))
        assert rank_share > 0.95
        assert rank_share > 3.0 * kl_share  # measured: KL ~0.27, rank ~1.0


FORMS_KW = [("tanh", {"k": 3.0}), ("tanh", {"k": 100.0}), ("sigmoid", {"beta": 2.0}), ("sign", {})]


@pytest.mark.parametrize("form,kw", FORMS_KW)
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 16, None])
def test_chunked_matches_naive_values_and_gradients(form, kw, chunk_size):
    g = torch.Generator().manual_seed(4)
    s = torch.randn(5, 16, generator=g, dtype=torch.float64).mul(0.05 if kw.get("k") == 100.0 else 1.0)
    t = torch.randn(5, 16, generator=g, dtype=torch.float64)
    s.requires_grad_(), t.requires_grad_()
    w = torch.randn(5, generator=g, dtype=torch.float64)
    chunked = pairwise_tau(s, t, form, chunk_size=chunk_size, **kw)
    naive = pairwise_tau_reference(s, t, form, **kw)
    assert torch.allclose(chunked, naive, atol=1e-12)
    g1 = torch.autograd.grad((chunked * w).sum(), (s, t))
    g2 = torch.autograd.grad((naive * w).sum(), (s, t))
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-12)
    if form != "sign":
        assert g1[0].abs().sum() > 0


@pytest.mark.parametrize("subset", ["all", "top", "bottom"])
@pytest.mark.parametrize("form", ["tanh", "sigmoid"])
def test_chunked_rank_loss_with_subsets_matches_unchunked(subset, form):
    g = torch.Generator().manual_seed(5)
    s = torch.randn(6, 40, generator=g).requires_grad_()
    t = torch.randn(6, 40, generator=g)
    kw = dict(form=form, k=5.0, subset=subset, fraction=0.25)
    one = rank_loss(s, t, chunk_size=2, **kw)
    whole = rank_loss(s, t, chunk_size=40, **kw)
    assert torch.allclose(one, whole, atol=1e-6)
    (ga,) = torch.autograd.grad(one, s)
    (gb,) = torch.autograd.grad(whole, s)
    assert torch.allclose(ga, gb, atol=1e-6)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(6)
    s = torch.randn(3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: pairwise_tau(a, b, "tanh", k=1.5, chunk_size=2), (s, t))
    assert torch.autograd.gradcheck(lambda a, b: pairwise_tau(a, b, "sigmoid", beta=0.7, chunk_size=3), (s, t))


def test_second_order_and_torch_func():
    # MAML-style inner loops differentiate through the gradient (create_graph=True); torch.func
    # learners call it under func.grad.
    g = torch.Generator().manual_seed(9)
    s = torch.randn(2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, b: pairwise_tau(a, b, "tanh", k=1.5, chunk_size=2), (s, t))
    assert torch.autograd.gradgradcheck(lambda a, b: pairwise_tau(a, b, "sigmoid", beta=0.7, chunk_size=4), (s, t))
    func_grad = torch.func.grad(lambda a: rank_loss(a, t.detach(), "tanh", k=2.0, chunk_size=2))(s.detach())
    (ref_grad,) = torch.autograd.grad((1 - pairwise_tau_reference(s, t, "tanh", k=2.0)).mean(), s)
    assert torch.allclose(func_grad, ref_grad, atol=1e-12)


def test_subset_indices_select_teacher_extremes():
    t = torch.tensor([[0.3, 5.0, -2.0, 1.0, 4.0, -7.0, 0.0, 2.0, -1.0, 3.0]])
    assert subset_indices(t, "top", 0.2).tolist() == [[1, 4]]
    assert subset_indices(t, "bottom", 0.3).tolist() == [[5, 2, 8]]
    assert subset_indices(t, "top", 0.01).shape == (1, 2)  # at least two channels
    g = torch.Generator().manual_seed(7)
    big = torch.randn(4, 100, generator=g)
    top = subset_indices(big, "top", 0.1)
    assert top.shape == (4, 10)
    assert torch.equal(top.sort(1).values, big.argsort(1, descending=True)[:, :10].sort(1).values)
    bottom = subset_indices(big, "bottom", 0.1)
    assert torch.equal(bottom.sort(1).values, big.argsort(1)[:, :10].sort(1).values)


@pytest.mark.parametrize("subset", ["top", "bottom"])
def test_subset_loss_equals_loss_on_gathered_channels(subset):
    g = torch.Generator().manual_seed(8)
    s, t = torch.randn(4, 30, generator=g), torch.randn(4, 30, generator=g)
    idx = subset_indices(t, subset, 0.2)
    expected = rank_loss(s.gather(1, idx), t.gather(1, idx), "sign")
    assert rank_loss(s, t, "sign", subset=subset, fraction=0.2).item() == expected.item()
    # order of the other channels must not matter
    s2 = s.clone()
    mask = torch.ones_like(s, dtype=torch.bool).scatter_(1, idx, False)
    s2[mask] = -s2[mask]
    assert rank_loss(s2, t, "sign", subset=subset, fraction=0.2).item() == expected.item()


def test_auto_chunk_plan_respects_budget_and_covers_rows():
    for batch, channels, budget in [(256, 1000, DEFAULT_MEMORY_BUDGET), (4096, 2000, 2**20), (3, 5, 2**20)]:
        batch_chunk, rows = plan_chunks(batch, channels, 4, None, budget)
        assert rows[0][0] == 0 and rows[-1][1] == channels
        assert all(b0 == a1 for (_, b0), (a1, _) in zip(rows, rows[1:]))
        for a, b in rows:
            assert 3 * batch_chunk * (b - a) * (channels - a) * 4 <= budget or (b - a == 1 and batch_chunk == 1)
    assert plan_chunks(4096, 2000, 4, None, 2**20)[0] < 4096  # batch is sliced when one row is too big
    s, t = torch.randn(9, 50), torch.randn(9, 50)
    tiny = pairwise_tau(s, t, "tanh", k=2.0, memory_budget=3 * 4 * 50 * 2)  # 2 samples x 1 row per block
    assert torch.allclose(tiny, pairwise_tau_reference(s, t, "tanh", k=2.0), atol=1e-6)


def test_backward_saves_only_the_inputs():
    saved = []

    def pack(x):
        saved.append(x.numel())
        return x

    s = torch.randn(8, 300, requires_grad=True)
    t = torch.randn(8, 300)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss = rank_loss(s, t, "tanh", k=5.0)
    assert sum(saved) <= 4 * 8 * 300  # O(B·C), not O(B·C²)
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        pairwise_tau_reference(s, t, "tanh", k=5.0)
    assert sum(saved) >= 8 * 300 * 300  # the naive version keeps the pairwise tensor
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_sign_form_has_zero_gradient_and_reductions():
    s = torch.randn(3, 6, requires_grad=True)
    t = torch.randn(3, 6)
    rank_loss(s, t, "sign").backward()
    assert torch.equal(s.grad, torch.zeros_like(s))
    per = rank_loss(s, t, "sign", reduction="none")
    assert per.shape == (3,)
    assert rank_loss(s, t, "sign", reduction="sum").item() == pytest.approx(per.sum().item())
    assert ((per >= 0) & (per <= 2)).all()


def test_bad_inputs():
    s = torch.randn(2, 5)
    with pytest.raises(ConfigError, match="form"):
        rank_loss(s, s, form="cosine")
    with pytest.raises(ConfigError, match="subset"):
        rank_loss(s, s, subset="middle")
    with pytest.raises(ConfigError, match="fraction"):
        rank_loss(s, s, subset="top", fraction=0.0)
    with pytest.raises(ConfigError, match="chunk_size"):
        rank_loss(s, s, chunk_size=0)
    with pytest.raises(ConfigError, match="k"):
        rank_loss(s, s, k=-1.0)
    with pytest.raises(DataError, match="same shape"):
        rank_loss(s, torch.randn(2, 6))
    with pytest.raises(DataError, match="at least 2 channels"):
        rank_loss(torch.randn(2, 1), torch.randn(2, 1))
    assert LOSSES.get("rank") is rank_loss
