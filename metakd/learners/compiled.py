"""torch.compile for the parts of a gradient learner that need no double backward.

Second-order MAML differentiates through the inner gradients, and torch.compile's aot_autograd has
no double backward (torch 2.14), so the second-order training inner loop always runs eagerly. What
compiles is the rest, which is most of the time spent in evaluation and first-order training:

- one inner SGD step (support forward, gradient by ``torch.func.grad``, update) under no_grad, looped
  in Python, so the graph is one step whatever the number of steps;
- the query forward of evaluation and of first-order training (a single backward is supported).

First-order training reuses the no-grad steps (``inner_loop.run_first_order``): with constant inner
gradients g_1..g_s the adapted weights are θ - Σ lr_i·g_i, so rebuilding them outside the compiled
code gives the same outer gradients for θ (identity) and for learned rates (-g_i) as the eager path.
Compiled kernels reorder floating-point sums, so results match the eager path to float tolerance,
not bit for bit.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, Mapping, Tuple, Union

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from ..errors import ConfigError
from .functional import LossFn, Params, forward
from .inner_loop import update

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
Rates = Mapping[str, Union[float, Tensor]]


class CompiledInner:
    """Lazily compiled inner step and forward of one model and support loss.

    model: the learner's backbone; loss_fn: its support loss (logits, labels) -> scalar; mode: a
    torch.compile mode (see COMPILE_MODES); compile=False keeps the functions eager (the first-order
    vectorised path uses them so: its inner steps then record no outer graph). Graphs are compiled on
    first use for each input shape and kept for the life of the learner; the batched variants vmap over
    a leading task dimension.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, mode: str = "default", compile: bool = True):
        if mode not in COMPILE_MODES:
            raise ConfigError(f"compile_mode={mode!r} must be one of {', '.join(COMPILE_MODES)}")
        self.model, self.loss_fn, self.mode, self.compile = model, loss_fn, mode, compile
        self._fns: Dict[str, Callable] = {}

    def __deepcopy__(self, memo: dict) -> "CompiledInner":  # a copied learner compiles its own graphs
        return CompiledInner(copy.deepcopy(self.model, memo), copy.deepcopy(self.loss_fn, memo), self.mode,
                             self.compile)

    def _loss(self, adapted: Params, static: Params, buffers: Params, x: Tensor, y: Tensor) -> Tensor:
        return self.loss_fn(forward(self.model, {**static, **adapted}, buffers, x), y)

    def _step(self, adapted: Params, static: Params, buffers: Params, x: Tensor, y: Tensor,
              lrs: Rates) -> Tuple[Params, Params]:
        g = grad(self._loss)(adapted, static, buffers, x, y)
        return update(adapted, g, lrs), g

    def _forward(self, adapted: Params, static: Params, buffers: Params, x: Tensor) -> Tensor:
        return forward(self.model, {**static, **adapted}, buffers, x)

    def _get(self, key: str, build: Callable[[], Callable]) -> Callable:
        if key not in self._fns:
            fn = build()
            self._fns[key] = torch.compile(fn, mode=self.mode, dynamic=False) if self.compile else fn
        return self._fns[key]

    def step(self, batched: bool) -> Callable:
        """(adapted, static, buffers, x, y, lrs) -> (new adapted, gradients); vmapped over tasks when
        ``batched`` (adapted, x, y with a leading task dimension; static, buffers, lrs shared)."""
        if batched:
            return self._get("step_batched", lambda: vmap(self._step, in_dims=(0, None, None, 0, 0, None),
                                                          randomness="different"))
        return self._get("step", lambda: self._step)

    def forward(self, batched: bool) -> Callable:
        """(adapted, static, buffers, x) -> logits; vmapped over tasks when ``batched`` (adapted and x
        with a leading task dimension)."""
        if batched:
            return self._get("forward_batched", lambda: vmap(self._forward, in_dims=(0, None, None, 0),
                                                             randomness="different"))
        return self._get("forward", lambda: self._forward)
