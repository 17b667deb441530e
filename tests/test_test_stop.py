"""test_stop: min_support_loss keeps, per task, the fast weights of the update count with the lowest support loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from learner_helpers import SmallConvNet, TemplateTasks
from metakd.errors import ConfigError
from metakd.learners import build_learner


def learner(name="maml", lr=0.3, steps=4, **options):
    torch.manual_seed(0)
    return build_learner(name, SmallConvNet(5), inner_lr=lr, train_steps=1, test_steps=steps, **options)


def support_losses(model, b, t, steps):
    """Support CE after 0..steps updates of task t, each from its own adapt call (the reference)."""
    return [float(F.cross_entropy(model.predict(model.adapt(b.support_x[t], b.support_y[t], steps=u), b.support_x[t]),
                                  b.support_y[t])) for u in range(steps + 1)]


@pytest.mark.parametrize("name", ["maml", "protomaml", "metasgd", "anil"])
def test_a_diverging_loop_is_stopped_at_the_lowest_support_loss_in_every_path(name):
    b = TemplateTasks(seed=3).batch(3, n_way=5, k_shot=1, q_query=2)
    plain, guarded = learner(name, lr=40.0), learner(name, lr=40.0, test_stop="min_support_loss")
    guarded.load_state_dict(plain.state_dict())
    plain.eval()
    best = guarded.best_updates(b.support_x, b.support_y, 4)
    for t in range(3):
        losses = support_losses(plain, b, t, 4)
        finite = [x if x == x else float("inf") for x in losses]
        assert int(best[t]) == finite.index(min(finite))
        # adapt + predict (task_logits, fixed episodes) equals the plain learner stopped at that count
        want = plain.predict(plain.adapt(b.support_x[t], b.support_y[t], steps=int(best[t])), b.query_x[t])
        got = guarded.task_logits(b.support_x[t], b.support_y[t], b.query_x[t], 5, False)
        assert torch.allclose(got, want, atol=1e-5)
        # evaluate (batched episodes) picks the same logits
        acc = (want.argmax(-1) == b.query_y[t]).float().mean()
        assert torch.isclose(guarded.evaluate(b)[t], acc)
    assert int(best.min()) < 4  # lr 40 diverges on at least one task: the guard does something here


def test_a_converging_loop_keeps_every_step_and_training_is_unchanged():
    b = TemplateTasks(seed=4).batch(2, n_way=5, k_shot=1, q_query=2)
    plain, guarded = learner(lr=0.05), learner(lr=0.05, test_stop="min_support_loss")
    guarded.load_state_dict(plain.state_dict())
    plain.eval()
    for t in range(2):
        losses = support_losses(plain, b, t, 4)
        assert losses == sorted(losses, reverse=True)  # a small rate: the support loss only falls
    assert guarded.best_updates(b.support_x, b.support_y, 4).tolist() == [4, 4]
    assert torch.equal(guarded.evaluate(b), plain.evaluate(b))
    plain.train(), guarded.train()
    assert torch.allclose(guarded.meta_loss(b)[0], plain.meta_loss(b)[0])  # the guard is evaluation only


def test_test_stop_is_validated():
    with pytest.raises(ConfigError, match="test_stop=.* must be one of none, min_support_loss"):
        learner(test_stop="early")
