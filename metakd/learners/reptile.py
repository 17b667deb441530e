"""Reptile (Nichol, Achiam & Schulman 2018): move θ towards the weights adapted on each task.

Each task adapts θ'_i by ``train_steps`` SGD steps on its support loss (no query loss); the outer
update is θ ← θ + ε·mean_i(θ'_i − θ). ``meta_loss`` returns the surrogate Σ_p ⟨θ_p, sg(θ_p − mean_i θ'_i,p)⟩
(sg: stop-gradient), whose gradient is exactly θ − mean_i θ'_i, so the configured meta-optimiser takes
it as its gradient: plain SGD with lr ε (momentum 0) is the paper's update; Adam works too. No engine
change is needed. Its value is not a loss: the metrics report the query cross-entropy and accuracy
of the adapted weights (computed without an outer graph) instead. Always first order.

Differences from the paper, documented: the inner loop is plain SGD on the whole support set (the
paper uses Adam on mini-batches of it), and the outer step size is whatever train.lr_schedule gives
(the paper anneals ε linearly to 0; ``cosine`` is the nearest shipped schedule).
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict, Tuple

import torch
from torch import Tensor

from ..data.episode import EpisodeBatch
from ..registry import LEARNERS
from ..validate import without
from .base import check_batch, check_query_logits
from .gradient import GradientLearner, TaskRun, _ce


@LEARNERS.register("reptile")
class Reptile(GradientLearner):
    """Reptile; options as GradientLearner without first_order (always first order)."""

    NAME = "reptile"
    OPTIONS: ClassVar[Dict[str, Any]] = without(GradientLearner.OPTIONS, "first_order")
    FIRST_ORDER = True
    NEEDS_FAST = True

    def outer_losses(self, run: TaskRun, query_y: Tensor) -> Tensor:
        """Per-task surrogate (T,): Σ_p ⟨θ_p, sg(θ_p − θ'_{i,p})⟩; its mean over tasks has gradient θ − mean θ'."""
        theta = self.parameters_dict()
        total = 0
        for name, fast in run.fast.items():
            p = theta[name]
            step = (p.detach().unsqueeze(0) - fast.detach()).to(p.dtype)  # (T, *shape)
            total = total + (step * p.unsqueeze(0)).flatten(1).sum(1)
        return total

    def meta_loss(self, batch: EpisodeBatch) -> Tuple[Tensor, Dict[str, float]]:
        """(surrogate whose gradient is θ − mean θ', metrics {"loss": query CE, "acc"}) over the batch's tasks."""
        check_batch(batch, self.model)
        with torch.no_grad():
            self.check_way(batch.n_way, training=True)
            run = self.run_tasks(batch.support_x, batch.support_y, batch.query_x, training=False,
                                 steps=self.train_steps)
        final = check_query_logits(self.NAME, run.logits[:, -1], batch, per_task=False)
        surrogate = self.outer_losses(run, batch.query_y).mean()
        ce = _ce(final, batch.query_y).mean()
        acc = (final.argmax(-1) == batch.query_y).float().mean(1).mean()
        loss_value, acc_value = torch.stack([ce, acc.to(ce.dtype)]).tolist()
        if self.training and torch.is_grad_enabled():
            self.meta_step_done()
        return surrogate, {"loss": loss_value, "acc": acc_value}
