"""compile=True (torch.compile of the inner step and query forward) gives the eager results.

Compiled kernels reorder sums, so values agree to float64 rounding, not bit for bit. Each new input
shape compiles once (a few seconds for TinyNet); the tests share shapes to keep that cost small.
"""
from __future__ import annotations

import copy

import pytest
import torch

from learner_helpers import TinyNet, random_batch
from metakd.errors import ConfigError
from metakd.learners import build_learner

LR, STEPS = 0.3, 2
RTOL = 1e-9


def _pair(name: str, seed: int = 0, running_bn: bool = False, **options):
    """The same learner (same weights) eager and compiled."""
    torch.manual_seed(seed)
    eager = build_learner(name, TinyNet(running_bn=running_bn).double(), inner_lr=LR, train_steps=STEPS,
                          test_steps=3, **options)
    if name == "metasgd":
        with torch.no_grad():
            for lr in eager.lrs.values():
                lr.uniform_(0.1, 0.5, generator=torch.Generator().manual_seed(seed))
    compiled = build_learner(name, copy.deepcopy(eager.model), inner_lr=LR, train_steps=STEPS, test_steps=3,
                             compile=True, **options)
    compiled.load_state_dict(eager.state_dict())
    return eager, compiled


def _loss_and_grads(learner, batch):
    loss, _ = learner.meta_loss(batch)
    return loss, torch.autograd.grad(loss, list(learner.parameters()), allow_unused=True)


def _close(a, b, rtol=RTOL):
    a = torch.cat([t.flatten() for t in a])
    b = torch.cat([t.flatten() for t in b])
    assert (a - b).norm() <= rtol * a.norm(), f"relative difference {((a - b).norm() / a.norm()).item():.2e}"


@pytest.mark.parametrize("name, options", [
    ("maml", {"first_order": True, "task_batching": "off"}),
    ("fomaml", {"task_batching": "vmap"}),
    ("metasgd", {"first_order": True, "task_batching": "off"}),
    ("anil", {"first_order": True, "task_batching": "off"}),
])
def test_first_order_training_and_evaluation_match_eager(name, options):
    eager, compiled = _pair(name, **options)
    batch = random_batch()
    loss_e, grads_e = _loss_and_grads(eager, batch)
    loss_c, grads_c = _loss_and_grads(compiled, batch)
    assert compiled.compiled_inner()._fns, "the compiled path did not run"
    assert loss_c.item() == pytest.approx(loss_e.item(), rel=RTOL)
    used = [i for i, g in enumerate(grads_e) if g is not None]
    assert used and all(grads_c[i] is not None for i in used)
    _close([grads_e[i] for i in used], [grads_c[i] for i in used])
    if name == "metasgd":  # the learned rates get their first-order gradient (-G) through θ - lr * G
        assert all(g is not None and g.abs().sum() > 0 for g in grads_c[-len(compiled.lrs):])
    torch.testing.assert_close(compiled.evaluate(batch), eager.evaluate(batch), rtol=0, atol=0)
    fast_e = eager.adapt(batch.support_x[0], batch.support_y[0])
    fast_c = compiled.adapt(batch.support_x[0], batch.support_y[0])
    _close([fast_e[n] for n in fast_e], [fast_c[n] for n in fast_e])
    assert not any(t.requires_grad for t in fast_c.values()), "evaluation's fast weights must be detached"


def test_second_order_training_stays_eager_and_evaluation_compiles():
    eager, compiled = _pair("maml")
    batch = random_batch(seed=3)
    loss_e, grads_e = _loss_and_grads(eager, batch)
    loss_c, grads_c = _loss_and_grads(compiled, batch)
    assert torch.equal(loss_e, loss_c)
    assert all(torch.equal(a, b) for a, b in zip(grads_e, grads_c))
    assert not compiled.compiled_inner()._fns, "second-order training must not take the compiled path"
    torch.testing.assert_close(compiled.evaluate(batch), eager.evaluate(batch), rtol=0, atol=0)
    assert set(compiled.compiled_inner()._fns) == {"step", "forward"}


def test_running_batch_norm_statistics_update_as_eagerly():
    eager, compiled = _pair("maml", running_bn=True, first_order=True)
    batch = random_batch(seed=4)
    _loss_and_grads(eager, batch)
    _loss_and_grads(compiled, batch)
    for (name, a), (_, b) in zip(eager.model.named_buffers(), compiled.model.named_buffers()):
        if a.is_floating_point():
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12, msg=name)
        else:
            assert torch.equal(a, b), name


def test_zero_steps_and_a_copied_learner():
    eager, compiled = _pair("maml", first_order=True)
    batch = random_batch(seed=5)
    x, y = batch.support_x[0], batch.support_y[0]
    for training in (False, True):
        fast = compiled.adapt(x, y, steps=0, training=training)
        for n, p in compiled.model.named_parameters():
            assert torch.equal(fast[n].detach(), p.detach())
    copied = copy.deepcopy(compiled)
    assert copied.compiled_inner().model is copied.model
    torch.testing.assert_close(copied.evaluate(batch), eager.evaluate(batch), rtol=0, atol=0)


@pytest.mark.parametrize("options, words", [
    ({"compile": "yes"}, ["compile", "true or false"]),
    ({"compile": True, "compile_mode": "fastest"}, ["compile_mode", "reduce-overhead"]),
])
def test_bad_compile_options_are_named(options, words):
    with pytest.raises(ConfigError) as err:
        build_learner("maml", TinyNet(), **options)
    assert all(w in str(err.value) for w in words)
