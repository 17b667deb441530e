"""Unicorn-MAML (Ye & Chao, ICLR 2022): one learned head row shared by every class before the inner loop.

The head of each task starts as N copies of one meta-learned row (weight vector w and bias b), so
the initial classifier does not depend on the order of the episode's labels; the inner loop then
adapts the copies separately. The outer gradient of (w, b) is the sum over the copies (autograd of
the expansion). The model's own head parameters are not used; w and b start from their mean. A model
trained N-way therefore evaluates at any way M as it is (M copies; no head_rule).
The published runs are first order (set ``first_order: true``, as the shipped configs do).
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict

from torch import Tensor, nn

from ..registry import LEARNERS
from .functional import Params
from .gradient import GradientLearner
from .heads import head_names
from .options import without


@LEARNERS.register("unicorn_maml")
class UnicornMAML(GradientLearner):
    """MAML with a permutation-invariant initial head: ``head_row`` (D,) and ``head_row_bias`` () learned."""

    NAME = "unicorn_maml"
    OPTIONS: ClassVar[Dict[str, Any]] = without(GradientLearner.OPTIONS, "head_rule")
    BUILDS_HEAD = True  # the shared row is copied into as many rows as the episode has classes

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(model, **options)
        self._hw, self._hb = head_names(self.NAME, model, self.head_name, self.adapted_names())
        params = dict(model.named_parameters())
        self.head_row = nn.Parameter(params[self._hw].detach().mean(0).clone())
        self.head_row_bias = nn.Parameter(params[self._hb].detach().mean().clone())

    def init_fast(self, params: Params, buffers: Params, support_x: Tensor, support_y: Tensor,
                  training: bool) -> Params:
        n = params[self._hw].shape[0]
        w, b = (self.head_row, self.head_row_bias) if training else (self.head_row.detach(), self.head_row_bias.detach())
        return {self._hw: w.expand(n, -1), self._hb: b.expand(n)}
