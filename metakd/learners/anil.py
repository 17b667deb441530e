"""ANIL (Raghu et al. 2020): only the classifier head adapts in the inner loop; the body is meta-learned only."""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, Optional, Tuple

from torch import Tensor, nn

from ..registry import LEARNERS
from ..validate import without
from .base import FeatureLogits
from .gradient import GradientLearner
from .heads import flat_features
from .inner_loop import InnerLoop, run_sequential


@LEARNERS.register("anil")
class ANIL(GradientLearner):
    """MAML whose inner loop moves only the parameters under ``head_name`` (default "head")."""

    NAME = "anil"
    OPTIONS: ClassVar[Dict[str, Any]] = without(GradientLearner.OPTIONS, "adapt")
    ADAPT = "head"

    def feature_head(self) -> Optional[Tuple[Callable[[Tensor], Tensor], FeatureLogits]]:
        """The test-time inner loop on cached features: the sequential executor run on the Linear head alone
        (``test_steps`` steps of ``support_loss``), when the model is ``head(features(x))`` with a Linear head,
        nothing but the head adapts, and no amp, per-step state, initialisation, own adapt/predict or
        test_stop applies."""
        model, name = self.model, self.head_name
        head = getattr(model, name, None)
        names = [f"{name}.weight", f"{name}.bias"]
        if (not isinstance(head, nn.Linear) or head.bias is None or sorted(self.adapted_names()) != sorted(names)
                or not isinstance(getattr(model, "features", None), nn.Module) or self.amp != "off"
                or self._plan["custom"] or self._has_state or self._has_init or self.test_stop != "none"):
            return None

        def logits(support_f: Tensor, support_y: Tensor, query_f: Tensor, n_way: int) -> Tensor:
            _, rates = self._inner_start(training=False)
            steps = self.test_steps
            loop = InnerLoop(head, ["weight", "bias"], {"weight": rates[names[0]], "bias": rates[names[1]]}, steps,
                             self.support_loss, first_order=True, query_after=self.query_steps(steps, False))
            params = {"weight": head.weight.detach(), "bias": head.bias.detach()}
            return run_sequential(loop, params, {}, support_f, support_y, query_f, training=False)[1][-1]

        return (lambda x: flat_features(model, x)), logits
