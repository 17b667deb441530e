"""GradientLearner: the MAML family's shared machinery, over the functional core.

Subclasses override up to three hooks: ``adapted_names()`` (which parameters the inner loop
moves), ``inner_lr(name)`` (a float or a tensor of the parameter's shape, which may itself be
meta-learned) and the ``first_order`` flag. Everything else follows:

    fast = adapt(support_x, support_y, training)      # dict name -> tensor
    logits = predict(fast, query_x)                    # task_logits

Second order means the inner gradients are taken with ``create_graph=True`` in training; at
evaluation the inner loop runs without it and its result is detached.
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .base import MetaLearner
from .functional import Params, forward, inner_loop, select_names


def _positive_number(learner: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"option {key}={value!r} of learner {learner!r} must be a positive number")
    return float(value)


def _steps(learner: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"option {key}={value!r} of learner {learner!r} must be an integer >= 0")
    return value


class GradientLearner(MetaLearner):
    """A learner whose task adaptation is a few SGD steps on the support loss.

    Options: inner_lr (0.01), train_steps (5, inner steps in meta_loss), test_steps (10, in
    evaluate), first_order (False), adapt ("all" | "head" | "body" | list of parameter-name
    prefixes), head_name ("head", the prefix of the classifier's parameters).
    """

    OPTIONS: ClassVar[Dict[str, Any]] = {
        "inner_lr": 0.01, "train_steps": 5, "test_steps": 10, "first_order": False, "adapt": "all", "head_name": "head",
    }
    ADAPT: ClassVar[Any] = "all"  # used when "adapt" is not among a subclass's OPTIONS

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(model, **options)
        o = self.options
        self.lr = _positive_number(self.NAME, "inner_lr", o["inner_lr"])
        self.train_steps = _steps(self.NAME, "train_steps", o["train_steps"])
        self.test_steps = _steps(self.NAME, "test_steps", o["test_steps"])
        self.first_order = o.get("first_order", False)
        if not isinstance(self.first_order, bool):
            raise ConfigError(f"option first_order={self.first_order!r} of learner {self.NAME!r} must be true or false")
        self.head_name = o["head_name"]
        if not isinstance(self.head_name, str) or not self.head_name:
            raise ConfigError(f"option head_name={self.head_name!r} of learner {self.NAME!r} must be a parameter-name prefix")
        named = [n for n, p in model.named_parameters() if p.requires_grad]
        self._adapted = select_names(named, o.get("adapt", self.ADAPT), self.head_name)

    # Hooks -----------------------------------------------------------------------------------
    def adapted_names(self) -> List[str]:
        """Names (as in model.named_parameters()) of the parameters the inner loop adapts."""
        return self._adapted

    def inner_lr(self, name: str) -> Union[float, Tensor]:
        """The inner-loop learning rate of parameter ``name``: a float or a tensor broadcastable to it."""
        return self.lr

    def support_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The inner-loop loss on the support set (cross-entropy)."""
        return F.cross_entropy(logits, labels)

    # Functional API ----------------------------------------------------------------------------
    def parameters_dict(self) -> Params:
        """The model's parameters as a name -> tensor dict (the starting point θ of every task)."""
        return dict(self.model.named_parameters())

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: Optional[int] = None,
              training: bool = False) -> Params:
        """Fast parameters after ``steps`` inner steps (default train_steps if training else test_steps).

        support_x (S, C, H, W), support_y (S,). With training=True the result stays differentiable
        w.r.t. the learner's parameters (second order unless first_order); with training=False it is
        detached.
        """
        if steps is None:
            steps = self.train_steps if training else self.test_steps
        names = self.adapted_names()
        params = self.parameters_dict()
        lrs = {n: self.inner_lr(n) for n in names}
        if not training:
            params = {n: p.detach() for n, p in params.items()}
            lrs = {n: lr.detach() if isinstance(lr, Tensor) else lr for n, lr in lrs.items()}
        return inner_loop(self.model, params, dict(self.model.named_buffers()), support_x, support_y, names, lrs,
                          steps, create_graph=not self.first_order, keep_graph=training, loss_fn=self.support_loss)

    def predict(self, params: Params, x: Tensor) -> Tensor:
        """Logits (B, n_way) of x (B, C, H, W) under the parameters ``params``."""
        return forward(self.model, params, dict(self.model.named_buffers()), x)

    def task_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int,
                    training: bool) -> Tensor:
        return self.predict(self.adapt(support_x, support_y, training=training), query_x)
