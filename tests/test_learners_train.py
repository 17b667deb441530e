"""A short meta-training run of every built-in learner on a learnable synthetic few-shot problem."""
from __future__ import annotations

import pytest
import torch

from learner_helpers import SmallConvNet, train_and_evaluate
from metakd.learners import build_learner


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread avoids OpenMP overhead (and stalls when the machine is busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["maml", "fomaml", "anil", "boil", "metasgd", "protonet"])
def test_meta_training_lifts_query_accuracy_well_above_chance(name, one_thread):
    torch.manual_seed(0)
    options = {} if name == "protonet" else {"inner_lr": 0.1, "train_steps": 3, "test_steps": 3}
    learner = build_learner(name, SmallConvNet(n_way=5), **options)
    before, after = train_and_evaluate(learner, iterations=100)
    # 5-way: chance is 0.2
    assert after >= 0.5, (before, after)
    assert after >= before + 0.2, (before, after)
