"""Meta-learners, registered by name in ``metakd.registry.LEARNERS``.

    learner = build_learner("maml", model, inner_lr=0.01, train_steps=5)
    loss, metrics = learner.meta_loss(batch)      # batch: metakd.data.episode.EpisodeBatch

Built in: maml, fomaml, anil, boil, metasgd, maml++, unicorn_maml, protomaml, reptile (gradient-based,
one inner-loop engine: ``gradient.py`` hooks, ``inner_loop.py`` executors) and protonet; msd wraps any of
them with Meta Self-Distillation (``msd.py``).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import LEARNERS
from ..validate import Opt
from . import anil, boil, fomaml, maml, mamlpp, metasgd, protomaml, protonet, reptile, unicorn  # noqa: F401
from . import msd  # noqa: F401  (Meta Self-Distillation around any of them)
from . import distilled  # noqa: F401  (teacher -> student meta-learner distillation)
from . import baselines  # noqa: F401  (linear_probe, cosine_classifier, finetune: no meta-training)
from .anil import ANIL
from .base import MetaLearner
from .boil import BOIL
from .fomaml import FOMAML
from .inner_loop import InnerLoop, PerStep
from .gradient import GradientLearner, TaskRun
from .maml import MAML
from .mamlpp import MAMLpp
from .metasgd import MetaSGD
from .msd import MSD
from .protomaml import ProtoMAML
from .protonet import ProtoNet
from .reptile import Reptile
from .unicorn import UnicornMAML


def build_learner(name: str, model: nn.Module, **options: Any) -> MetaLearner:
    """The learner registered as ``name`` around ``model``; unknown names/options raise ConfigError."""
    return LEARNERS.build(name, model, **options)


__all__ = ["ANIL", "BOIL", "FOMAML", "GradientLearner", "InnerLoop", "LEARNERS", "MAML", "MAMLpp", "MetaLearner",
           "MetaSGD", "MSD", "Opt", "PerStep", "ProtoMAML", "ProtoNet", "Reptile", "TaskRun", "UnicornMAML",
           "build_learner"]
