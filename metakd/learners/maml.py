"""MAML (Finn et al. 2017): every parameter adapts; second-order meta-gradient by default."""
from ..registry import LEARNERS
from .gradient import GradientLearner


@LEARNERS.register("maml")
class MAML(GradientLearner):
    """θ'_i = θ − α ∇θ L(f_θ(S_i)) for k steps; outer loss: query loss of f_θ'_i, mean over tasks.

    Options as GradientLearner (first_order=True gives FOMAML; adapt selects a subset of parameters).
    """

    NAME = "maml"
