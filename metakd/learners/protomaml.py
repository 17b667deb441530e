"""ProtoMAML (Triantafillou et al. 2020, Meta-Dataset): the head starts from the support prototypes.

Before step 0 the classifier of each task is W_k = 2·c_k, b_k = −‖c_k‖², with c_k the mean embedding
(``model.features``) of the support examples of class k, so that at step 0 the logits are
−‖f(x) − c_k‖² + ‖f(x)‖²: ProtoNet's up to a per-query constant. Then ordinary MAML steps adapt every
chosen parameter, head included. The initialisation is differentiable (its gradient reaches the
embedding) in both orders; first order only makes the inner gradients constants. The model's own
head parameters are not used, so a model trained N-way evaluates at any way as it is (no head_rule).
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict

from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import LEARNERS
from ..validate import Opt, without
from .functional import Params, submodule_forward
from .gradient import GradientLearner
from .heads import class_means, head_names


@LEARNERS.register("protomaml")
class ProtoMAML(GradientLearner):
    """MAML whose head is initialised from the support prototypes. Options as GradientLearner, plus
    features_name ("features", the embedding submodule whose output feeds the head)."""

    NAME = "protomaml"
    OPTIONS: ClassVar[Dict[str, Any]] = {**without(GradientLearner.OPTIONS, "head_rule"),
                                         "features_name": Opt("features", "str")}
    BUILDS_HEAD = True  # prototypes of any way: no head_rule needed

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(model, **options)
        self.features_name = self.options["features_name"]
        if not isinstance(getattr(model, self.features_name, None), nn.Module):
            raise ConfigError(f"learner 'protomaml' needs the model's embedding as submodule "
                              f"features_name={self.features_name!r} (the built-in backbones have `features`)")
        self._hw, self._hb = head_names(self.NAME, model, self.head_name, self.adapted_names())

    def init_fast(self, params: Params, buffers: Params, support_x: Tensor, support_y: Tensor,
                  training: bool) -> Params:
        z = submodule_forward(self.model, self.features_name, params, buffers, support_x).flatten(1)
        c = class_means(z, support_y, params[self._hw].shape[0]).to(params[self._hw].dtype)
        return {self._hw: 2 * c, self._hb: -(c * c).sum(1)}
