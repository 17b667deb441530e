"""A new learner written from outside the package, registered by name, built and trained (the example in docs/learners.md)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learner_helpers import SmallConvNet, TinyNet, random_batch, train_and_evaluate
from metakd.learners import GradientLearner, MetaLearner, PerStep, build_learner
from metakd.registry import LEARNERS

# --- docs/learners.md example begins ---------------------------------------------------------------------


@LEARNERS.register("maml_layer_lr")
class LayerLRMAML(GradientLearner):
    """MAML with one learned inner learning rate per adapted tensor (a light Meta-SGD)."""

    NAME = "maml_layer_lr"

    def __init__(self, model: nn.Module, **options):
        super().__init__(model, **options)
        self.index = {name: i for i, name in enumerate(self.adapted_names())}
        self.log_lrs = nn.Parameter(torch.full((len(self.index),), math.log(self.lr)))  # meta-learned

    def inner_lr(self, name: str) -> torch.Tensor:
        return self.log_lrs[self.index[name]].exp()


@LEARNERS.register("maml_step_lr")
class StepLRMAML(GradientLearner):
    """A new update rule: one learned inner rate per step, shared by every parameter."""

    NAME = "maml_step_lr"

    def __init__(self, model: nn.Module, **options):
        super().__init__(model, **options)
        self.step_lrs = nn.Parameter(torch.full((max(1, self.train_steps),), self.lr))  # meta-learned

    def inner_lr(self, name: str) -> PerStep:
        return PerStep(self.step_lrs)  # step s uses step_lrs[s] (later steps the last)


@LEARNERS.register("cosine_centroid")
class CosineCentroid(MetaLearner):
    """No inner loop: logits = scale * cosine(query embedding, class-mean support embedding)."""

    NAME = "cosine_centroid"
    OPTIONS = {"scale": 10.0}

    def task_logits(self, support_x, support_y, query_x, n_way, training):
        support, query = self.model.features(support_x), self.model.features(query_x)
        centroids = F.one_hot(support_y, n_way).t().to(support.dtype) @ support  # class sums
        cos = F.normalize(query, dim=-1) @ F.normalize(centroids, dim=-1).t()
        return self.options["scale"] * cos


# learner = build_learner("maml_layer_lr", build_backbone("conv4", n_way=5), inner_lr=0.01)
# loss, metrics = learner.meta_loss(batch); loss.backward(); optimizer.step()
# --- docs/learners.md example ends -----------------------------------------------------------------------


def test_layer_lr_maml_is_maml_with_learnable_rates():
    torch.manual_seed(0)
    model = TinyNet().double()
    batch = random_batch(tasks=2)
    ours = build_learner("maml_layer_lr", model, inner_lr=0.3, train_steps=2).double()  # rates too
    meta_sgd = build_learner("metasgd", model, inner_lr=0.3, train_steps=2)
    maml = build_learner("maml", model, inner_lr=0.3, train_steps=2)
    loss, _ = ours.meta_loss(batch)
    torch.testing.assert_close(loss, maml.meta_loss(batch)[0])
    # d/d(log a) = a * sum of Meta-SGD's per-entry rate gradients for that tensor
    grad = torch.autograd.grad(loss, ours.log_lrs)[0]
    sgd_loss, _ = meta_sgd.meta_loss(batch)
    rate_grads = torch.autograd.grad(sgd_loss, list(meta_sgd.lrs.values()))
    torch.testing.assert_close(grad, torch.stack([0.3 * g.sum() for g in rate_grads]))


@pytest.mark.parametrize("name, options", [("maml_layer_lr", {"inner_lr": 0.1, "train_steps": 3, "test_steps": 3}),
                                           ("cosine_centroid", {})])
def test_custom_learners_train(name, options):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        learner = build_learner(name, SmallConvNet(n_way=5), **options)
        start = [p.detach().clone() for p in learner.parameters()]
        before, after = train_and_evaluate(learner, iterations=60)
    finally:
        torch.set_num_threads(threads)
    assert after >= 0.5 and after >= before + 0.2, (before, after)
    if name == "maml_layer_lr":
        assert not torch.equal(start[-1], learner.log_lrs.detach()), "the rates are meta-learned"


@pytest.mark.parametrize("first_order", [False, True])
def test_per_step_rate_learner_runs_on_every_executor(first_order):
    """The docs' per-step-rate learner: MAML's loss at equal rates, and the same loss and meta-gradients
    on the sequential, vectorised and (first order) compiled executors."""
    batch = random_batch(tasks=2)
    modes = [{"task_batching": "off"}, {"task_batching": "vmap"}] + ([{"compile": True}] if first_order else [])
    results = []
    for extra in modes:
        torch.manual_seed(0)
        learner = build_learner("maml_step_lr", TinyNet().double(), inner_lr=0.3, train_steps=2, first_order=first_order,
                                **extra).double()
        if not results:
            with torch.no_grad():
                learner.step_lrs.fill_(0.3)  # the float64 value (the rates were created in float32)
            maml = build_learner("maml", learner.model, inner_lr=0.3, train_steps=2, first_order=first_order)
            torch.testing.assert_close(learner.meta_loss(batch)[0], maml.meta_loss(batch)[0], rtol=1e-12, atol=0)
        with torch.no_grad():
            learner.step_lrs.copy_(torch.tensor([0.3, 0.1]))
        loss, _ = learner.meta_loss(batch)
        results.append((loss, torch.autograd.grad(loss, list(learner.parameters()))))
    (l0, g0), rest = results[0], results[1:]
    assert g0[-1].abs().min() > 0, "each step's rate gets its own meta-gradient"
    for loss, grads in rest:
        torch.testing.assert_close(loss, l0, rtol=1e-9, atol=1e-12)
        for a, b in zip(g0, grads):
            torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-12)
