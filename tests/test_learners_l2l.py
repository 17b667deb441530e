"""MAML's and Meta-SGD's meta-gradients against learn2learn's on the same weights and episodes."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from learner_helpers import TinyNet, random_batch
from metakd.learners import build_learner

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    l2l = pytest.importorskip("learn2learn")

LR, STEPS = 0.3, 2


def _l2l_meta_grads(wrapper, batch) -> list:
    """learn2learn's clone/adapt loop; returns d(mean query CE)/d(wrapper.parameters())."""
    total = 0.0
    for t in range(batch.num_tasks):
        clone = wrapper.clone()
        for _ in range(STEPS):
            clone.adapt(F.cross_entropy(clone(batch.support_x[t]), batch.support_y[t]))
        total = total + F.cross_entropy(clone(batch.query_x[t]), batch.query_y[t])
    return list(torch.autograd.grad(total / batch.num_tasks, list(wrapper.parameters())))


def _ours(name, model, batch, lr=LR, **options) -> list:
    learner = build_learner(name, model, inner_lr=lr, train_steps=STEPS, **options)
    loss, _ = learner.meta_loss(batch)
    return list(torch.autograd.grad(loss, list(learner.parameters())))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("first_order", [False, True])
def test_maml_matches_learn2learn(first_order, dtype, tol):
    torch.manual_seed(0)
    model = TinyNet(n_way=3, in_channels=3, size=6, width=4).to(dtype)
    batch = random_batch(tasks=3, channels=3, size=6, seed=1, dtype=dtype)
    theirs = _l2l_meta_grads(l2l.algorithms.MAML(copy.deepcopy(model), lr=LR, first_order=first_order), batch)
    ours = _ours("maml", model, batch, first_order=first_order)
    assert len(ours) == len(theirs) == 6
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("first_order", [False, True])
def test_metasgd_matches_learn2learn(first_order):
    torch.manual_seed(0)
    model = TinyNet(n_way=3, in_channels=3, size=6, width=4).double()
    batch = random_batch(tasks=3, channels=3, size=6, seed=2)
    wrapper = l2l.algorithms.MetaSGD(copy.deepcopy(model), lr=LR, first_order=first_order)
    learner = build_learner("metasgd", model, inner_lr=LR, train_steps=STEPS, first_order=first_order)
    with torch.no_grad():  # the same non-uniform rates on both sides (both in model-parameter order)
        for ours_lr, their_lr in zip(learner.lrs.values(), wrapper.lrs):
            ours_lr.uniform_(0.1, 0.5)
            their_lr.copy_(ours_lr)
    theirs = _l2l_meta_grads(wrapper, batch)  # model params, then lrs
    loss, _ = learner.meta_loss(batch)
    ours = list(torch.autograd.grad(loss, list(learner.parameters())))
    assert len(ours) == len(theirs) == 12
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_conv4_maml_matches_learn2learn_at_float32():
    """The real backbone (Conv4-32 at 28x28) in float32, as the benchmark runs it."""
    from metakd.models import build_backbone

    torch.manual_seed(0)
    model = build_backbone("conv4", 5, in_channels=1, image_size=28)
    batch = random_batch(tasks=2, n_way=5, k_shot=1, q_query=3, size=28, seed=3, dtype=torch.float32)
    theirs = _l2l_meta_grads(l2l.algorithms.MAML(copy.deepcopy(model), lr=0.01), batch)
    ours = _ours("maml", model, batch, lr=0.01)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
