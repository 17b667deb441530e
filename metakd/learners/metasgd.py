"""Meta-SGD (Li et al. 2017): a learned inner learning rate per parameter entry, meta-learned with θ."""
from typing import Any

import torch
from torch import Tensor, nn

from ..registry import LEARNERS
from .gradient import GradientLearner


def lr_key(name: str) -> str:
    """ParameterDict key of parameter ``name`` (keys may not contain dots)."""
    return name.replace(".", "__")


@LEARNERS.register("metasgd")
class MetaSGD(GradientLearner):
    """θ' = θ − α ⊙ ∇θ L, with α of θ's shape, initialised to inner_lr and trained by the outer loss.

    ``self.lrs`` (a ParameterDict keyed by parameter name with "." -> "__") is part of
    ``self.parameters()``, so the outer optimiser updates it. first_order=True detaches the inner
    gradients; α still receives its meta-gradient.
    """

    NAME = "metasgd"

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(model, **options)
        params = dict(model.named_parameters())
        self.lrs = nn.ParameterDict()  # filled in model order (a dict argument would be sorted by key)
        for name in self.adapted_names():
            self.lrs[lr_key(name)] = nn.Parameter(torch.full_like(params[name], self.lr))

    def inner_lr(self, name: str) -> Tensor:
        return self.lrs[lr_key(name)]
