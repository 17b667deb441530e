"""BOIL (Oh et al. 2021): only the body adapts in the inner loop; the head is frozen there but meta-learned."""
from typing import Any, ClassVar, Dict

from ..registry import LEARNERS
from ..validate import without
from .gradient import GradientLearner


@LEARNERS.register("boil")
class BOIL(GradientLearner):
    """MAML whose inner loop moves every parameter except those under ``head_name`` (default "head").

    The head still receives the outer (meta) gradient, through the query loss of the adapted body.
    """

    NAME = "boil"
    OPTIONS: ClassVar[Dict[str, Any]] = without(GradientLearner.OPTIONS, "adapt")
    ADAPT = "body"
