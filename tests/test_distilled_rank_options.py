"""Meta-learning distillation passes the rank loss's subset, fraction and relative sharpness through."""
import pytest
import torch

import metakd.learners.distilled as distilled
from learner_helpers import TinyNet, random_batch
from metakd.distill.rank import rank_loss
from metakd.errors import ConfigError
from metakd.learners import build_learner
from metakd.learners.distilled import DistilledLearner


def pair(**options):
    torch.manual_seed(0)
    student = build_learner("maml", TinyNet(n_way=3, width=3), inner_lr=0.3, train_steps=1, test_steps=1)
    teacher = build_learner("maml", TinyNet(n_way=3, width=5), inner_lr=0.3, train_steps=1, test_steps=1)
    return DistilledLearner(student, teacher, **options)


def test_rank_options_reach_the_loss(monkeypatch):
    seen = []

    def spy(s, t, **kw):
        seen.append(kw)
        return rank_loss(s, t, **kw)

    monkeypatch.setattr(distilled, "rank_loss", spy)
    learner = pair(rank_weight=1.0, rank_k=3.0, rank_k_scale="std", rank_subset="top", rank_fraction=0.5)
    loss, metrics = learner.meta_loss(random_batch(tasks=1, dtype=torch.float32, seed=1))
    assert torch.isfinite(loss) and "rank" in metrics
    assert seen and all(kw["k_scale"] == "std" and kw["subset"] == "top" and kw["fraction"] == 0.5 and kw["k"] == 3.0
                        for kw in seen)


def test_bad_rank_options_are_named():
    with pytest.raises(ConfigError, match="rank_k_scale"):
        pair(rank_weight=1.0, rank_k_scale="relative")
    with pytest.raises(ConfigError, match="rank_subset"):
        pair(rank_weight=1.0, rank_subset="middle")
