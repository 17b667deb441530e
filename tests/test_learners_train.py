"""A short meta-training run of every built-in learner on a learnable synthetic few-shot problem."""
from __future__ import annotations

import pytest
import torch

from learner_helpers import SmallConvNet, TemplateTasks, train_and_evaluate
from metakd.learners import build_learner


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread avoids OpenMP overhead (and stalls when the machine is busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["maml", "fomaml", "anil", "boil", "metasgd", "protonet", "maml++", "unicorn_maml",
                                  "protomaml"])
def test_meta_training_lifts_query_accuracy_well_above_chance(name, one_thread):
    torch.manual_seed(0)
    options = {} if name == "protonet" else {"inner_lr": 0.1, "train_steps": 3, "test_steps": 3}
    learner = build_learner(name, SmallConvNet(n_way=5), **options)
    before, after = train_and_evaluate(learner, iterations=100)
    # 5-way: chance is 0.2
    assert after >= 0.5, (before, after)
    assert after >= before + 0.2, (before, after)


def test_reptile_meta_training_lifts_query_accuracy(one_thread):
    """Reptile on 5-shot episodes (its outer step only sees support sets; 1-shot support sets of 5 images
    give it too little to move towards, which is why the paper trains with more shots than it tests)."""
    torch.manual_seed(0)
    learner = build_learner("reptile", SmallConvNet(n_way=5), inner_lr=0.1, train_steps=3, test_steps=3)
    train, test = TemplateTasks(seed=1), TemplateTasks(seed=1)
    test.g.manual_seed(1001)
    held_out = test.batch(50, k_shot=5)
    before = learner.evaluate(held_out).mean().item()
    opt = torch.optim.Adam(learner.parameters(), 3e-3)
    for _ in range(100):
        loss, _ = learner.meta_loss(train.batch(4, k_shot=5))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = learner.evaluate(held_out).mean().item()
    assert after >= 0.6 and after >= before + 0.2, (before, after)
