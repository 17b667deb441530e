"""A model meta-trained N-way evaluated at another way: the check before the inner loop, and the head rules."""
from __future__ import annotations

import pytest
import torch

from learner_helpers import SmallConvNet, TemplateTasks
from metakd.errors import ConfigError
from metakd.learners import build_learner


def batch(n_way, tasks=3, seed=7):
    return TemplateTasks(seed=seed).batch(tasks, n_way=n_way, k_shot=1, q_query=2)


def maml(n_way=5, **options):
    torch.manual_seed(0)
    return build_learner("maml", SmallConvNet(n_way), **{"inner_lr": 0.3, "train_steps": 1, "test_steps": 2, **options})


def test_way_mismatch_is_a_config_error_before_the_inner_loop(monkeypatch):
    learner = maml(head_rule="error")
    called = []
    monkeypatch.setattr(learner, "support_loss", lambda *a: called.append(1))
    with pytest.raises(ConfigError, match=r"20-way but the model's head 'head' has 5 rows.*head_rule") as err:
        learner.evaluate(batch(20))
    assert "\n" not in str(err.value)
    for call in (lambda: learner.meta_loss(batch(20)), lambda: maml().meta_loss(batch(20)),
                 lambda: build_learner("reptile", SmallConvNet(5)).meta_loss(batch(20)),
                 lambda: build_learner("protomaml", SmallConvNet(5)).meta_loss(batch(20))):
        with pytest.raises(ConfigError, match="meta-training needs the head's way"):
            call()
    with pytest.raises(ConfigError, match="20-way"):
        learner.adapt(batch(20).support_x[0], batch(20).support_y[0])  # the way read from the labels
    assert not called  # refused before any inner step
    with pytest.raises(ConfigError, match="head_rule=.* must be one of prototype, copy_row, zero, error"):
        maml(head_rule="random")


@pytest.mark.parametrize("rule", ["prototype", "copy_row", "zero"])
def test_head_rules_shapes_and_a_5_way_model_evaluates_20_way(rule):
    torch.manual_seed(0)
    learner = maml(head_rule=rule)
    opt = torch.optim.Adam(learner.parameters(), 3e-3)
    train = TemplateTasks(seed=1)
    for _ in range(15):
        loss, _ = learner.meta_loss(train.batch(4, n_way=5))
        opt.zero_grad()
        loss.backward()
        opt.step()
    b = batch(20)
    fast = learner.adapt(b.support_x[0], b.support_y[0], steps=0)  # the rule's head, before any step
    w, bias = fast["head.weight"], fast["head.bias"]
    assert w.shape == (20, learner.model.head.in_features) and bias.shape == (20,)
    trained = learner.model.head
    if rule == "zero":
        assert torch.count_nonzero(w) == 0 and torch.count_nonzero(bias) == 0
    elif rule == "copy_row":
        assert torch.allclose(w, trained.weight.mean(0).expand(20, -1)) and torch.allclose(bias, trained.bias.mean().expand(20))
    else:
        with torch.no_grad():
            z = learner.model.features(b.support_x[0])
        assert torch.allclose(w, 2 * z, atol=1e-5) and torch.allclose(bias, -(z * z).sum(1), atol=1e-4)  # 1-shot
    logits = learner.predict(learner.adapt(b.support_x[0], b.support_y[0]), b.query_x[0])
    assert logits.shape == (40, 20)
    acc = learner.evaluate(b)
    assert acc.shape == (3,) and learner.model.head.out_features == 5  # the model itself is unchanged
    assert learner.evaluate(batch(20, tasks=8, seed=11)).mean() > 0.1  # chance is 0.05


def test_prototype_rule_at_step_0_is_protonet_on_the_features():
    learner = maml(head_rule="prototype", test_steps=0)
    proto = build_learner("protonet", learner.model)
    b = batch(20, tasks=4)
    assert torch.equal(learner.evaluate(b), proto.evaluate(b))


def test_learners_that_build_their_head_and_metasgd_rates():
    b = batch(20, tasks=2)
    for name, opts in (("protomaml", {}), ("unicorn_maml", {}), ("metasgd", {}), ("anil", {}), ("maml++", {}),
                       ("protonet", {})):
        torch.manual_seed(0)
        learner = build_learner(name, SmallConvNet(5), **({"test_steps": 1} if name != "protonet" else {}), **opts)
        assert learner.evaluate(b).shape == (2,), name
    with pytest.raises(ConfigError, match=r"unknown option\(s\) 'head_rule' for learner 'protomaml'"):
        build_learner("protomaml", SmallConvNet(5), head_rule="zero")
    learner = build_learner("metasgd", SmallConvNet(5), head_rule="copy_row", test_steps=1)
    with torch.no_grad():
        learner.lrs["head__weight"].uniform_(0.1, 0.5)  # per-row rates: the mean row serves 20 rows
    fast = learner.adapt(b.support_x[0], b.support_y[0])
    assert fast["head.weight"].shape == (20, learner.model.head.in_features)
