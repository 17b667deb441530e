"""MAML++, Unicorn-MAML, ProtoMAML and Reptile: float64 references written from the papers' equations,
their properties, and every executor equal to the sequential one."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learner_helpers import TinyNet, random_batch, reference_forward
from metakd.learners import build_learner
from metakd.learners.reptile import Reptile

LR, STEPS = 0.3, 2
ATOL = dict(rtol=1e-9, atol=1e-12)


def _learner(name, seed=0, running_bn=False, **options):
    torch.manual_seed(seed)
    return build_learner(name, TinyNet(running_bn=running_bn).double(),
                         **{"inner_lr": LR, "train_steps": STEPS, "test_steps": 3, **options})


def _grads(learner, batch):
    loss, metrics = learner.meta_loss(batch)
    named = [(n, p) for n, p in learner.named_parameters()]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return loss, metrics, {n: g for (n, _), g in zip(named, grads)}


def _features(w, x):
    h = F.batch_norm(F.conv2d(x, w[0], w[1], padding=1), None, None, w[2], w[3], training=True)
    return F.max_pool2d(F.relu(h), 2).flatten(1)


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


# --- references ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("second_order", [True, False])
def test_mamlpp_matches_reference(second_order):
    """LSLR rates, per-step BN weights, multi-step loss with annealed weights, both orders."""
    fo_iters = 0 if second_order else 100
    learner = _learner("maml++", msl_iterations=10, first_order_iterations=fo_iters)
    learner.iteration = 3
    with torch.no_grad():  # distinct per-step values, so a wrong pairing of step and value shows
        for p in list(learner.lslrs.values()):
            p.uniform_(0.1, 0.5)
        for p in list(learner.bn_weight.values()) + list(learner.bn_bias.values()):
            p.add_(torch.randn_like(p) * 0.3)
    batch = random_batch(tasks=2)
    loss, _, ours = _grads(learner, batch)
    assert learner.iteration == 4

    w = [_leaf(p) for p in learner.model.parameters()]
    bw, bb = _leaf(learner.bn_weight["features__1"]), _leaf(learner.bn_bias["features__1"])
    adapted = [0, 1, 4, 5]
    keys = ["features__0__weight", "features__0__bias", "head__weight", "head__bias"]
    rates = [_leaf(learner.lslrs[k]) for k in keys]
    k, t, n_iter = STEPS, 3, 10
    early = max(1 / k - t / (k * n_iter), 0.03 / k)
    weights = [early] * (k - 1) + [1 - early * (k - 1)]
    total = 0.0
    for task in range(2):
        fast = {i: w[i] for i in adapted}
        for s in range(k):
            ws = [fast[0], fast[1], bw[s], bb[s], fast[4], fast[5]]
            loss_s = F.cross_entropy(reference_forward(ws, batch.support_x[task]), batch.support_y[task])
            g = torch.autograd.grad(loss_s, [fast[i] for i in adapted], create_graph=second_order)
            fast = {i: fast[i] - rates[j][s] * g[j] for j, i in enumerate(adapted)}
            q = reference_forward([fast[0], fast[1], bw[s], bb[s], fast[4], fast[5]], batch.query_x[task])
            total = total + weights[s] * F.cross_entropy(q, batch.query_y[task])
    total = total / 2
    torch.testing.assert_close(loss, total, **ATOL)
    ref = torch.autograd.grad(total, [w[i] for i in adapted] + [bw, bb] + rates)
    names = [f"model.{n}" for n in ("features.0.weight", "features.0.bias", "head.weight", "head.bias")]
    names += ["bn_weight.features__1", "bn_bias.features__1"] + [f"lslrs.{k}" for k in keys]
    for name, g in zip(names, ref):
        torch.testing.assert_close(ours[name], g, **ATOL, msg=name)
    assert ours["model.features.1.weight"] is None, "per-step BN replaces the model's own BN affine"


@pytest.mark.parametrize("second_order", [True, False])
def test_unicorn_matches_reference(second_order):
    learner = _learner("unicorn_maml", first_order=not second_order)
    with torch.no_grad():
        learner.head_row.normal_()
        learner.head_row_bias.fill_(0.3)
    batch = random_batch(tasks=2)
    loss, _, ours = _grads(learner, batch)
    w = [_leaf(p) for p in learner.model.parameters()][:4]
    row, bias = _leaf(learner.head_row), _leaf(learner.head_row_bias)
    total = 0.0
    for t in range(2):
        fast = w + [row.repeat(3, 1), bias.repeat(3)]  # the one row copied into all N rows
        for _ in range(STEPS):
            g = torch.autograd.grad(F.cross_entropy(reference_forward(fast, batch.support_x[t]), batch.support_y[t]),
                                    fast, create_graph=second_order)
            fast = [f - LR * gi for f, gi in zip(fast, g)]
        total = total + F.cross_entropy(reference_forward(fast, batch.query_x[t]), batch.query_y[t]) / 2
    torch.testing.assert_close(loss, total, **ATOL)
    ref = torch.autograd.grad(total, w + [row, bias])
    names = [f"model.{n}" for n in ("features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias")]
    for name, g in zip(names + ["head_row", "head_row_bias"], ref):
        torch.testing.assert_close(ours[name], g, **ATOL, msg=name)


@pytest.mark.parametrize("second_order", [True, False])
def test_protomaml_matches_reference(second_order):
    learner = _learner("protomaml", first_order=not second_order)
    batch = random_batch(tasks=2)
    loss, _, ours = _grads(learner, batch)
    w = [_leaf(p) for p in learner.model.parameters()][:4]
    total = 0.0
    for t in range(2):
        z, y = _features(w, batch.support_x[t]), batch.support_y[t]
        c = torch.stack([z[y == k].mean(0) for k in range(3)])
        fast = list(w) + [2 * c, -(c * c).sum(1)]  # W_k = 2 c_k, b_k = -||c_k||^2
        inner = [f.view_as(f) for f in fast]  # inner gradients: partial derivatives at the fast weights
        fast = inner
        for _ in range(STEPS):
            g = torch.autograd.grad(F.cross_entropy(reference_forward(fast, batch.support_x[t]), y), fast,
                                    create_graph=second_order)
            fast = [f - LR * gi for f, gi in zip(fast, g)]
        total = total + F.cross_entropy(reference_forward(fast, batch.query_x[t]), batch.query_y[t]) / 2
    torch.testing.assert_close(loss, total, **ATOL)
    ref = torch.autograd.grad(total, w)
    names = [f"model.{n}" for n in ("features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias")]
    for name, g in zip(names, ref):
        torch.testing.assert_close(ours[name], g, **ATOL, msg=name)
    assert ours["model.head.weight"] is None, "the head comes from the prototypes"


def test_reptile_gradient_is_theta_minus_mean_adapted_weights():
    learner = _learner("reptile")
    batch = random_batch(tasks=3)
    loss, metrics, ours = _grads(learner, batch)
    w = [p.detach().clone() for p in learner.model.parameters()]
    adapted_sum = [torch.zeros_like(p) for p in w]
    for t in range(3):
        fast = [p.clone().requires_grad_(True) for p in w]
        for _ in range(STEPS):
            g = torch.autograd.grad(F.cross_entropy(reference_forward(fast, batch.support_x[t]), batch.support_y[t]),
                                    fast)
            fast = [(f - LR * gi).detach().requires_grad_(True) for f, gi in zip(fast, g)]
        adapted_sum = [a + f.detach() for a, f in zip(adapted_sum, fast)]
    for (name, _), p, a in zip(learner.model.named_parameters(), w, adapted_sum):
        torch.testing.assert_close(ours[f"model.{name}"], p - a / 3, **ATOL)
    assert 0 < metrics["loss"] < 10 and 0 <= metrics["acc"] <= 1  # the query CE, not the surrogate


class LeastSquaresReptile(Reptile):
    NAME = "reptile-lsq-test"

    def support_loss(self, logits, labels):  # L = 1/(2S) sum_i ||W x_i - y_i||^2
        return 0.5 * (logits - F.one_hot(labels, logits.shape[1]).to(logits.dtype)).pow(2).sum() / len(labels)


def test_reptile_on_least_squares_matches_the_closed_form():
    """W_k = W_0 M^k + lr B sum_{j<k} M^j, M = I - lr A, A = X^T X / S, B = Y^T X / S."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False)).double()
    steps, lr = 4, 0.2
    learner = LeastSquaresReptile(model, inner_lr=lr, train_steps=steps)
    batch = random_batch(tasks=2, size=2)
    surrogate, _ = learner.meta_loss(batch)
    grad = torch.autograd.grad(surrogate, [model[1].weight])[0]
    w0 = model[1].weight.detach()
    adapted = []
    for t in range(2):
        x = batch.support_x[t].flatten(1)
        y = F.one_hot(batch.support_y[t], 3).double()
        a, b = x.t() @ x / len(x), y.t() @ x / len(x)
        m = torch.eye(4, dtype=torch.float64) - lr * a
        series = sum(torch.linalg.matrix_power(m, j) for j in range(steps))
        adapted.append(w0 @ torch.linalg.matrix_power(m, steps) + lr * b @ series)
    torch.testing.assert_close(grad, w0 - torch.stack(adapted).mean(0), rtol=1e-10, atol=1e-13)
    opt = torch.optim.SGD([model[1].weight], lr=1.0)  # ε = 1: θ moves to the mean adapted weights
    model[1].weight.grad = grad
    opt.step()
    torch.testing.assert_close(model[1].weight.detach(), torch.stack(adapted).mean(0), rtol=1e-10, atol=1e-13)


# --- properties ---------------------------------------------------------------------------------------------


def test_unicorn_predictions_permute_with_the_label_order():
    learner = _learner("unicorn_maml")
    batch = random_batch(tasks=1)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    perm = torch.tensor([2, 0, 1])
    a = learner.predict(learner.adapt(sx, sy), qx)
    b = learner.predict(learner.adapt(sx, perm[sy]), qx)
    torch.testing.assert_close(b[:, perm], a, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(a[:, 0], a[:, 1])


def test_protomaml_with_zero_steps_ranks_as_protonet():
    learner = _learner("protomaml", test_steps=0)
    proto = build_learner("protonet", learner.model)
    batch = random_batch(tasks=1)
    args = (batch.support_x[0], batch.support_y[0], batch.query_x[0], 3, False)
    diff = learner.task_logits(*args) - proto.task_logits(*args)  # = ||f(x)||^2, one constant per query
    torch.testing.assert_close(diff - diff[:, :1], torch.zeros_like(diff), rtol=0, atol=1e-10)


def test_mamlpp_with_every_piece_off_is_maml_exactly():
    off = dict(multi_step_loss=False, lslr=False, per_step_bn=False, first_order_iterations=0)
    batch = random_batch(tasks=2)
    for extra in ({}, {"first_order": True}):
        l1, _, g1 = _grads(_learner("maml", **extra), batch)
        l2, _, g2 = _grads(_learner("maml++", **off, **extra), batch)
        assert torch.equal(l1, l2)
        assert all(torch.equal(g, g2[n]) for n, g in g1.items())


def test_mamlpp_schedules_and_state_dict():
    learner = _learner("maml++", msl_iterations=2, first_order_iterations=1)
    batch = random_batch(tasks=1)
    assert learner.first_order_now() and learner.query_steps(STEPS, True) == (1, 2)
    learner.evaluate(batch)
    assert learner.iteration == 0, "evaluation does not count"
    learner.meta_loss(batch)
    assert not learner.first_order_now() and learner.iteration == 1
    assert learner.msl_weights(2)[0] < 0.5 < learner.msl_weights(2)[1]
    learner.meta_loss(batch)
    assert learner.query_steps(STEPS, True) == (2,), "multi-step loss only for msl_iterations"
    fresh = _learner("maml++", seed=1, msl_iterations=2, first_order_iterations=1)
    fresh.load_state_dict(learner.state_dict())
    assert fresh.iteration == 2
    msd = build_learner("msd", TinyNet(size=8).double(), host="maml++", views=2, inner_lr=LR, train_steps=STEPS)
    batch = random_batch(tasks=1, size=8)
    batch.support_x = batch.support_x.sigmoid()
    msd.meta_loss(batch)
    assert msd.host.iteration == 1, "MSD counts its host's meta-iterations"


def test_mamlpp_per_step_running_statistics():
    learner = _learner("maml++", running_bn=True)
    bn = learner.model.features[1]
    learner.meta_loss(random_batch(tasks=2))[0].backward()
    means = learner.bn_mean__features__1
    assert means.shape == (STEPS, 3) and bool((means != 0).all()), "every step's statistics moved"
    assert not torch.equal(means[0], means[1])
    assert torch.equal(bn.running_mean, torch.zeros(3, dtype=torch.float64)), "the model's own are not used"
    assert learner.evaluate(random_batch(tasks=2)).shape == (2,)


# --- executors ----------------------------------------------------------------------------------------------

CASES = [
    ("maml++", {}), ("maml++", {"first_order_iterations": 0}), ("protomaml", {}), ("protomaml", {"first_order": True}),
    ("unicorn_maml", {}), ("unicorn_maml", {"first_order": True}), ("reptile", {}),
]


def _copies(name, options, **other):
    base = _learner(name, **options)
    if name == "maml++":
        with torch.no_grad():
            for p in base.lslrs.values():
                p.uniform_(0.1, 0.5, generator=torch.Generator().manual_seed(0))
    other_learner = build_learner(name, copy.deepcopy(base.model), inner_lr=LR, train_steps=STEPS, test_steps=3,
                                  **options, **other)
    other_learner.load_state_dict(base.state_dict())
    return base, other_learner


def _assert_same_run(seq, other, batch, rtol):
    l1, m1, g1 = _grads(seq, batch)
    l2, m2, g2 = _grads(other, batch)
    assert abs(l1.item() - l2.item()) <= rtol * abs(l1.item()) + 1e-12 and m1["acc"] == m2["acc"]
    for n, g in g1.items():
        assert (g is None) == (g2[n] is None), n
        if g is not None:
            assert (g - g2[n]).norm() <= rtol * g.norm() + 1e-12, n
    assert torch.equal(seq.evaluate(batch), other.evaluate(batch))


@pytest.mark.parametrize("name, options", CASES)
def test_vectorised_executor_equals_sequential(name, options):
    seq, vec = _copies(name, options, task_batching="vmap")
    assert vec.uses_task_batching(torch.device("cpu"))
    _assert_same_run(seq, vec, random_batch(tasks=3), rtol=1e-10)


@pytest.mark.parametrize("name, options", [("maml++", {"first_order_iterations": 10}), ("protomaml", {"first_order": True}),
                                           ("unicorn_maml", {"first_order": True}), ("reptile", {})])
def test_compiled_executor_equals_sequential(name, options):
    seq, comp = _copies(name, options, compile=True)
    _assert_same_run(seq, comp, random_batch(), rtol=1e-9)
    assert comp.compiled_inner()._fns, "the compiled path ran"


@pytest.mark.parametrize("host", ["maml++", "unicorn_maml", "protomaml", "reptile"])
def test_each_new_learner_is_an_msd_host(host):
    torch.manual_seed(0)
    batch = random_batch(tasks=2, size=8, dtype=torch.float32)
    batch.support_x, batch.query_x = batch.support_x.sigmoid(), batch.query_x.sigmoid()
    opts = {"inner_lr": LR, "train_steps": STEPS}
    plain = build_learner(host, TinyNet(size=8), **opts)
    msd = build_learner("msd", copy.deepcopy(plain.model), host=host, views=1, lam=0.0, augment="identity", **opts)
    msd.host.load_state_dict(plain.state_dict())
    assert torch.equal(plain.meta_loss(batch)[0], msd.meta_loss(batch)[0])
    two = build_learner("msd", TinyNet(size=8), host=host, views=2, **opts)
    loss, metrics = two.meta_loss(batch)
    loss.backward()
    assert metrics["adapted_copies"] == 4 and any(p.grad is not None for p in two.parameters())
