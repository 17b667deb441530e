"""ANIL (Raghu et al. 2020): only the classifier head adapts in the inner loop; the body is meta-learned only."""
from typing import Any, ClassVar, Dict

from ..registry import LEARNERS
from .gradient import GradientLearner
from .options import without


@LEARNERS.register("anil")
class ANIL(GradientLearner):
    """MAML whose inner loop moves only the parameters under ``head_name`` (default "head")."""

    NAME = "anil"
    OPTIONS: ClassVar[Dict[str, Any]] = without(GradientLearner.OPTIONS, "adapt")
    ADAPT = "head"
