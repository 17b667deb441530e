"""ProtoNet: logits are minus squared distances to class-mean prototypes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from learner_helpers import TinyNet, random_batch
from metakd.errors import ConfigError, DataError
from metakd.learners import build_learner
from metakd.learners.protonet import prototypes


def _by_hand(embed, sx, sy, qx, n_way):
    with torch.no_grad():
        zs, zq = embed(sx), embed(qx)
    protos = [zs[sy == k].mean(0) for k in range(n_way)]
    return torch.tensor([[-float(((zq[i] - protos[k]) ** 2).sum()) for k in range(n_way)] for i in range(len(zq))],
                        dtype=zq.dtype)


def test_logits_are_negative_squared_distances_to_prototypes():
    torch.manual_seed(0)
    model = TinyNet().double()
    learner = build_learner("protonet", model)
    batch = random_batch(tasks=1, n_way=3, k_shot=2, q_query=3)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    perm = torch.randperm(len(sy))  # support order must not matter
    logits = learner.task_logits(sx[perm], sy[perm], qx, 3, training=True)
    expected = _by_hand(lambda x: model.features(x), sx, sy, qx, 3)
    torch.testing.assert_close(logits.detach(), expected, rtol=1e-10, atol=1e-10)


def test_model_without_features_embeds_with_its_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 7)).double()
    learner = build_learner("protonet", model)
    batch = random_batch(tasks=1, n_way=3, k_shot=2, q_query=2)
    logits = learner.task_logits(batch.support_x[0], batch.support_y[0], batch.query_x[0], 3, training=False)
    torch.testing.assert_close(logits.detach(), _by_hand(model, batch.support_x[0], batch.support_y[0],
                                                         batch.query_x[0], 3))


def test_meta_loss_and_evaluate():
    torch.manual_seed(0)
    learner = build_learner("protonet", TinyNet().double())
    loss, metrics = learner.meta_loss(random_batch(tasks=2))
    loss.backward()
    assert learner.model.features[0].weight.grad.abs().sum() > 0
    assert 0.0 <= metrics["acc"] <= 1.0
    accs = learner.evaluate(random_batch(tasks=2))
    assert accs.shape == (2,) and not accs.requires_grad


def test_missing_class_and_options_are_clear_errors():
    with pytest.raises(DataError, match=r"no example of episode class\(es\) \[2\]"):
        prototypes(torch.randn(4, 5), torch.tensor([0, 0, 1, 1]), 3)
    with pytest.raises(ConfigError, match="valid options: \\(none\\)"):
        build_learner("protonet", TinyNet(), inner_lr=0.1)
