"""First-order MAML: the inner gradients are constants, so the second-order terms vanish."""
from typing import Any, ClassVar, Dict

from torch import nn

from ..registry import LEARNERS
from .gradient import GradientLearner


@LEARNERS.register("fomaml")
class FOMAML(GradientLearner):
    """MAML with detached inner gradients: dL_query/dθ is taken as dL_query/dθ' (Finn et al. 2017, §5.2)."""

    NAME = "fomaml"
    OPTIONS: ClassVar[Dict[str, Any]] = {k: v for k, v in GradientLearner.OPTIONS.items() if k != "first_order"}

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(model, **options)
        self.first_order = True
