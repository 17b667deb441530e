"""Meta-gradients of the gradient-based learners against a hand-written float64 reference, and their options."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from learner_helpers import TinyNet, random_batch, reference_meta_grads
from metakd.errors import ConfigError
from metakd.learners import GradientLearner, build_learner
from metakd.learners.functional import select_names
from metakd.registry import LEARNERS

LR, STEPS = 0.3, 2
BODY, HEAD = [0, 1, 2, 3], [4, 5]  # indices into TinyNet's parameter list


def _learner(name: str, seed: int = 0, **options):
    torch.manual_seed(seed)
    model = TinyNet().double()
    return build_learner(name, model, inner_lr=LR, train_steps=STEPS, **options)


def _meta_grads(learner) -> list:
    loss, metrics = learner.meta_loss(random_batch(tasks=2))
    assert set(metrics) == {"loss", "acc"} and abs(metrics["loss"] - loss.item()) < 1e-12
    return list(torch.autograd.grad(loss, list(learner.parameters())))


def _reference(learner, adapted, second_order, metasgd=False) -> list:
    weights = [p.detach().clone().requires_grad_(True) for p in learner.model.parameters()]
    lrs = [lr.detach().clone().requires_grad_(True) for lr in learner.lrs.values()] if metasgd else None
    return reference_meta_grads(weights, random_batch(tasks=2), LR, STEPS, adapted, second_order, lrs)


@pytest.mark.parametrize(
    "name, options, adapted, second_order",
    [
        ("maml", {}, BODY + HEAD, True),
        ("maml", {"first_order": True}, BODY + HEAD, False),
        ("fomaml", {}, BODY + HEAD, False),
        ("anil", {}, HEAD, True),
        ("boil", {}, BODY, True),
        ("maml", {"adapt": ["features.1", "head.bias"]}, [2, 3, 5], True),
    ],
)
def test_meta_gradient_matches_reference(name, options, adapted, second_order):
    learner = _learner(name, **options)
    ours, ref = _meta_grads(learner), _reference(learner, adapted, second_order)
    assert len(ours) == len(ref) == 6
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("first_order", [False, True])
def test_metasgd_meta_gradient_matches_reference_including_lrs(first_order):
    learner = _learner("metasgd", first_order=first_order)
    with torch.no_grad():  # distinct per-entry rates, so a wrong pairing of rate and parameter shows
        for lr in learner.lrs.values():
            lr.uniform_(0.1, 0.5)
    ours = _meta_grads(learner)
    ref = _reference(learner, BODY + HEAD, not first_order, metasgd=True)
    assert len(ours) == len(ref) == 12
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert all(g.abs().sum() > 0 for g in ours[6:]), "every learned rate gets a meta-gradient"


def test_first_order_differs_from_second_order():
    maml, fomaml = _meta_grads(_learner("maml")), _meta_grads(_learner("fomaml"))
    diff = sum((a - b).norm() ** 2 for a, b in zip(maml, fomaml)) ** 0.5
    scale = sum(a.norm() ** 2 for a in maml) ** 0.5
    assert diff > 1e-3 * scale


def test_anil_and_boil_adapt_only_their_parameters():
    batch = random_batch(tasks=1)
    for name, moved in (("anil", {"head.weight", "head.bias"}),
                        ("boil", {"features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias"})):
        learner = _learner(name)
        assert set(learner.adapted_names()) == moved
        theta = learner.parameters_dict()
        fast = learner.adapt(batch.support_x[0], batch.support_y[0], training=True)
        for n in theta:
            changed = not torch.equal(fast[n], theta[n])
            assert changed == (n in moved), (name, n)
    # BOIL's head is frozen in the inner loop but still meta-learned.
    grads = dict(zip([n for n, _ in _learner("boil").named_parameters()], _meta_grads(_learner("boil"))))
    assert grads["model.head.weight"].abs().sum() > 0


def test_evaluate_uses_test_steps_and_keeps_no_graph():
    learner = _learner("maml", test_steps=3)
    batch = random_batch(tasks=2)
    accs = learner.evaluate(batch)
    assert accs.shape == (2,) and not accs.requires_grad
    assert all(p.grad is None for p in learner.parameters())
    for t in range(2):
        fast = learner.adapt(batch.support_x[t], batch.support_y[t], steps=3)
        assert not any(v.requires_grad for v in fast.values())
        expected = (learner.predict(fast, batch.query_x[t]).argmax(-1) == batch.query_y[t]).float().mean()
        assert accs[t].item() == pytest.approx(expected.item())
    # steps=None means test_steps at evaluation and train_steps in training
    default = learner.adapt(batch.support_x[1], batch.support_y[1])
    torch.testing.assert_close(default, fast, rtol=0, atol=0)
    trained = learner.adapt(batch.support_x[1], batch.support_y[1], training=True)
    two = learner.adapt(batch.support_x[1], batch.support_y[1], steps=STEPS)
    torch.testing.assert_close({n: v.detach() for n, v in trained.items()}, two)
    assert not torch.allclose(two["head.weight"], fast["head.weight"])


def test_evaluate_restores_training_mode_and_works_under_no_grad():
    learner = _learner("anil")
    learner.train()
    with torch.no_grad():
        accs = learner.evaluate(random_batch(tasks=3))
    assert accs.shape == (3,) and learner.training and learner.model.training


def test_any_forward_only_module_works_with_maml_and_metasgd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    for name in ("maml", "fomaml", "metasgd"):
        loss, _ = build_learner(name, model, inner_lr=0.1).meta_loss(random_batch())
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        model.zero_grad()


def test_head_name_selects_a_custom_classifier():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    learner = build_learner("anil", model, head_name="3")
    assert learner.adapted_names() == ["3.weight", "3.bias"]
    with pytest.raises(ConfigError, match="head_name='head'.*top-level parameter prefixes: 1, 3"):
        build_learner("anil", model)
    with pytest.raises(ConfigError, match="head_name"):
        build_learner("boil", model)


def test_running_batchnorm_buffers_flow_through_functional_call():
    torch.manual_seed(0)
    model = TinyNet(running_bn=True).double()
    learner = build_learner("maml", model, inner_lr=0.1, train_steps=2)
    bn = model.features[1]
    assert torch.equal(bn.running_mean, torch.zeros(3))
    learner.meta_loss(random_batch())[0].backward()
    assert bn.num_batches_tracked.item() == 2 * (2 + 1)  # 2 tasks x (2 inner steps + 1 query pass)
    assert not torch.equal(bn.running_mean, torch.zeros(3, dtype=torch.float64))


def test_options_are_checked():
    model = TinyNet().double()
    with pytest.raises(ConfigError, match=r"'inner_steps'.*valid options: adapt, amp, checkpoint_inner, compile, compile_mode, first_order, head_name, head_rule, inner_lr, task_batching, task_chunk"):
        build_learner("maml", model, inner_steps=3)
    with pytest.raises(ConfigError, match="'adapt'.*learner 'anil'"):
        build_learner("anil", model, adapt="all")
    with pytest.raises(ConfigError, match="'first_order'.*learner 'fomaml'"):
        build_learner("fomaml", model, first_order=False)
    with pytest.raises(ConfigError, match="inner_lr=-1"):
        build_learner("maml", model, inner_lr=-1)
    with pytest.raises(ConfigError, match="train_steps"):
        build_learner("maml", model, train_steps=1.5)
    with pytest.raises(ConfigError, match="first_order"):
        build_learner("metasgd", model, first_order="yes")
    with pytest.raises(ConfigError, match="adapt prefix 'body'"):
        build_learner("maml", model, adapt=["body"])
    with pytest.raises(ConfigError, match="unknown learner 'leo'"):
        build_learner("leo", model)
    with pytest.raises(ConfigError, match="torch.nn.Module"):
        build_learner("maml", "conv4")


def test_select_names():
    names = ["features.0.weight", "features.0.bias", "features.10.weight", "head.weight", "head.bias"]
    assert select_names(names, "all", "head") == names
    assert select_names(names, "head", "head") == ["head.weight", "head.bias"]
    assert select_names(names, "body", "head") == names[:3]
    assert select_names(names, ["features.0"], "head") == names[:2]  # not features.10
    with pytest.raises(ConfigError, match="expected 'all', 'head', 'body'"):
        select_names(names, "everything", "head")


def test_wrong_number_of_logits_is_a_clear_error():
    torch.manual_seed(0)
    learner = build_learner("maml", TinyNet(n_way=4).double())
    with pytest.raises(ConfigError, match="n_way=3"):
        learner.meta_loss(random_batch(n_way=3))


def test_registry_lists_the_built_in_learners():
    gradient = ("maml", "fomaml", "anil", "boil", "metasgd", "maml++", "unicorn_maml", "protomaml", "reptile")
    assert {*gradient, "protonet"} <= set(LEARNERS.names())
    assert all(issubclass(LEARNERS.get(n), GradientLearner) for n in gradient)
