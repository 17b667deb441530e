"""First-order MAML: the inner gradients are constants, so the second-order terms vanish."""
from typing import Any, ClassVar, Dict

from ..registry import LEARNERS
from ..validate import without
from .gradient import GradientLearner


@LEARNERS.register("fomaml")
class FOMAML(GradientLearner):
    """MAML with detached inner gradients: dL_query/dθ is taken as dL_query/dθ' (Finn et al. 2017, §5.2)."""

    NAME = "fomaml"
    OPTIONS: ClassVar[Dict[str, Any]] = without(GradientLearner.OPTIONS, "first_order")
    FIRST_ORDER = True
