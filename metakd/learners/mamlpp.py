"""MAML++ (Antoniou, Edwards & Storkey, ICLR 2019, "How to train your MAML"), piece by piece.

Each piece is an option and can be switched off alone (the paper's ablation); with all of them off
the learner is MAML exactly:

- ``multi_step_loss``: the outer loss is Σ_u w_u · CE(query after u updates), u = 1..K (K = train_steps),
  for the first ``msl_iterations`` meta-iterations; then the last step's CE only. With t the
  iteration, the weights anneal linearly towards the last step: w_u = max(1/K − t/(K·msl_iterations),
  0.03/K) for u < K, and w_K = 1 − Σ_{u<K} w_u.
- ``lslr``: learned per-layer, per-step inner rates: one rate per adapted tensor per step (K values,
  initialised to inner_lr; steps beyond K use the last).
- ``per_step_bn``: every BatchNorm gets K sets of weights and biases (meta-learned, not adapted in the
  inner loop), and K sets of running statistics when it tracks them (``bn: running``). The support
  forward of step s uses set s; the query forward after u updates uses set u − 1 (set 0 at u = 0).
- ``first_order_iterations``: the first N meta-iterations are first order, then second order
  (derivative-order annealing; ``first_order: true`` keeps it first order throughout).
- cosine annealing of the meta learning rate is the trainer's ``train.lr_schedule: cosine`` (the
  shipped ``mamlpp_*`` configs set it).

The iteration t counts training meta-iterations (``meta_step_done``: called by ``meta_loss``, and by MSD
and the distilled learner around it); it is saved in the state dict (extra state), so a resumed run
continues the schedules exactly. As a distilled student only the last step's query loss is used.
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Tuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import LEARNERS
from ..validate import Opt
from .inner_loop import PerStep, Rate, State
from .gradient import GradientLearner, TaskRun, _ce
from .metasgd import lr_key


@LEARNERS.register("maml++")
class MAMLpp(GradientLearner):
    """MAML++ (see the module docstring). Options as GradientLearner plus multi_step_loss (true),
    msl_iterations (5000), lslr (true), per_step_bn (true), first_order_iterations (25000)."""

    NAME = "maml++"
    OPTIONS: ClassVar[Dict[str, Any]] = {
        **GradientLearner.OPTIONS,
        "multi_step_loss": Opt(True, "bool"), "msl_iterations": Opt(5000, "int>=0"),
        "lslr": Opt(True, "bool"), "per_step_bn": Opt(True, "bool"),
        "first_order_iterations": Opt(25000, "int>=0"),
    }

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(model, **options)
        o = self.options
        self.iteration = 0
        self.sets = max(1, self.train_steps)
        params = dict(model.named_parameters())
        self._bn: List[Tuple[str, str, str]] = []  # (module name, key, has running statistics)
        self.bn_weight, self.bn_bias = nn.ParameterDict(), nn.ParameterDict()
        if o["per_step_bn"]:
            for name, m in model.named_modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                    key = lr_key(name)
                    self.bn_weight[key] = nn.Parameter(m.weight.detach().expand(self.sets, -1).clone())
                    self.bn_bias[key] = nn.Parameter(m.bias.detach().expand(self.sets, -1).clone())
                    if m.track_running_stats:
                        self.register_buffer(f"bn_mean__{key}", m.running_mean.expand(self.sets, -1).clone())
                        self.register_buffer(f"bn_var__{key}", m.running_var.expand(self.sets, -1).clone())
                        self.register_buffer(f"bn_count__{key}", m.num_batches_tracked.expand(self.sets).clone())
                    self._bn.append((name, key, m.track_running_stats))
            if not self._bn:
                raise ConfigError("learner 'maml++': per_step_bn=true but the model has no affine BatchNorm; "
                                  "set per_step_bn: false")
            bn_params = {f"{n}.{w}" for n, _, _ in self._bn for w in ("weight", "bias")}
            self._adapted = [n for n in self._adapted if n not in bn_params]  # per-step, not adapted
            if not self._adapted:
                raise ConfigError("learner 'maml++': with per_step_bn=true the inner loop would adapt nothing "
                                  "(only BatchNorm parameters were selected by adapt)")
        self.lslrs = nn.ParameterDict()
        if o["lslr"]:
            for name in self._adapted:
                self.lslrs[lr_key(name)] = nn.Parameter(torch.full((self.sets,), self.lr, dtype=params[name].dtype))

    # Pieces as hooks ----------------------------------------------------------------------------------
    def inner_lr(self, name: str) -> Rate:
        return PerStep(self.lslrs[lr_key(name)]) if self.options["lslr"] else self.lr

    def first_order_now(self) -> bool:
        return self.first_order or self.iteration < self.options["first_order_iterations"]

    def step_state(self, index: int, training: bool) -> State:
        i = min(index, self.sets - 1)
        params: Dict[str, Tensor] = {}
        buffers: Dict[str, Tensor] = {}
        for name, key, running in self._bn:
            w, b = self.bn_weight[key][i], self.bn_bias[key][i]
            params[f"{name}.weight"], params[f"{name}.bias"] = (w, b) if training else (w.detach(), b.detach())
            if running:
                buffers[f"{name}.running_mean"] = getattr(self, f"bn_mean__{key}")[i]
                buffers[f"{name}.running_var"] = getattr(self, f"bn_var__{key}")[i]
                buffers[f"{name}.num_batches_tracked"] = getattr(self, f"bn_count__{key}")[i]
        return params, buffers

    def _multi_step(self) -> bool:
        return self.options["multi_step_loss"] and self.iteration < self.options["msl_iterations"]

    def query_steps(self, steps: int, training: bool) -> Tuple[int, ...]:
        if training and steps > 1 and self._multi_step():
            return tuple(range(1, steps + 1))
        return (steps,)

    def msl_weights(self, steps: int) -> List[float]:
        """The multi-step loss weights w_1..w_K at the current iteration (sum 1)."""
        k, t = steps, self.iteration
        decay = 1.0 / k / max(1, self.options["msl_iterations"])
        floor = 0.03 / k
        early = [max(1.0 / k - t * decay, floor)] * (k - 1)
        return early + [1.0 - sum(early)]

    def outer_losses(self, run: TaskRun, query_y: Tensor) -> Tensor:
        if len(run.query_after) == 1:
            losses = _ce(run.logits[:, -1], query_y)
        else:
            weights = self.msl_weights(len(run.query_after))
            losses = sum(w * _ce(run.logits[:, u], query_y) for u, w in enumerate(weights))
        return losses

    def meta_step_done(self) -> None:
        self.iteration += 1

    # The iteration travels in the state dict -------------------------------------------------------
    def get_extra_state(self) -> Dict[str, int]:
        return {"iteration": self.iteration}

    def set_extra_state(self, state: Dict[str, int]) -> None:
        self.iteration = int(state["iteration"])
