"""The one inner-loop engine of every gradient learner: a description, one update, three executors.

A learner describes one inner loop as an :class:`InnerLoop`, filled in from its hooks (see
``gradient.py``): which parameters adapt, the rate of each at each step, optional per-step state
(parameter and buffer overrides used by the forward passes of a step, e.g. per-step BatchNorm), the
support loss, an optional initialisation of the fast weights from the support set before step 0,
and after which numbers of updates the query logits are wanted. :func:`update` applies one step,
``p - rate * g``, for every executor (and ANIL's cached-feature evaluation). Three executors run a
description and give equal results within float rounding; ``GradientLearner.executor`` chooses one:

- :func:`run_sequential`: one task, plain autograd (second order: inner gradients with a graph); supports
  inner-loop checkpointing and BatchNorm that updates running statistics.
- :func:`run_vectorised`: all tasks as one ``torch.func.vmap`` computation, inner gradients by
  ``torch.func.grad`` (second order through them, or first order with them detached).
- :func:`run_first_order`: first order (or evaluation): inner steps under no_grad through a
  :class:`CompiledInner` (compiled or eager, one task or vmapped), then the fast weights rebuilt as
  ``start - sum_s rate_s * g_s``, which carries the first-order outer gradient to θ, to learned rates
  and to the initialisation.

Indices of per-step state: the support forward of step s (0-based) uses state s; the query forward
after u updates uses state max(u - 1, 0), the state of the step that produced the weights.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from .batched import PrimitiveBatchNorm
from .functional import LossFn, Params, checkpointed_forward, forward

State = Tuple[Params, Params]  # (parameter overrides, buffer overrides) of one step's forwards


class PerStep:
    """A rate with one value per inner step: ``values`` (S, *shape broadcastable to the parameter).
    Step s >= S uses the last value (e.g. more test steps than trained steps)."""

    __slots__ = ("values",)

    def __init__(self, values: Tensor):
        self.values = values

    def at(self, step: int) -> Tensor:
        return self.values[min(step, self.values.shape[0] - 1)]

    def detach(self) -> "PerStep":
        return PerStep(self.values.detach())


Rate = Union[float, Tensor, PerStep]


@dataclass
class InnerLoop:
    """One task's inner loop. ``rates[name]``: a float, a tensor broadcastable to the parameter, or a
    PerStep. ``state(index)``: per-step overrides (None: none). ``init(params, buffers, sx, sy)``: the
    entries of the fast weights to replace before step 0 (None: start from θ). ``query_after``: update
    counts (0..steps) after which the query logits are returned, ascending."""

    model: nn.Module
    names: List[str]
    rates: Dict[str, Rate]
    steps: int
    loss_fn: LossFn
    first_order: bool
    query_after: Tuple[int, ...] = ()
    state: Optional[Callable[[int], State]] = None
    init: Optional[Callable[[Params, Params, Tensor, Tensor], Params]] = None
    checkpoint: bool = False
    _per_step: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if not self.query_after:
            self.query_after = (self.steps,)
        self._per_step = any(isinstance(r, PerStep) for r in self.rates.values())

    def rates_at(self, step: int) -> Mapping[str, Union[float, Tensor]]:
        if not self._per_step:
            return self.rates  # type: ignore[return-value]
        return {n: r.at(step) if isinstance(r, PerStep) else r for n, r in self.rates.items()}

    def with_state(self, params: Params, buffers: Params, index: int) -> Tuple[Params, Params]:
        if self.state is None:
            return params, buffers
        p, b = self.state(index)
        return {**params, **p}, ({**buffers, **b} if b else buffers)


def update(fast: Params, grads: Mapping[str, Optional[Tensor]], rates: Mapping[str, Union[float, Tensor]]) -> Params:
    """One inner step, the only place it is written: ``p - rate * g`` for each entry of ``grads`` that has a
    gradient; every other entry of ``fast`` unchanged. Pure (a new dict), so every executor calls it: the
    sequential loop, the vectorised one under ``vmap``, the compiled step under ``torch.compile``, and
    cached-feature evaluation (``feature_head`` of ANIL)."""
    new = dict(fast)
    for name, g in grads.items():
        if g is not None:
            new[name] = fast[name] - rates[name] * g
    return new


def _start(loop: InnerLoop, params: Params, buffers: Params, sx: Tensor, sy: Tensor) -> Params:
    if loop.init is None:
        return params
    p, b = loop.with_state(params, buffers, 0)
    return {**params, **loop.init(p, b, sx, sy)}


def run_sequential(loop: InnerLoop, params: Params, buffers: Params, sx: Tensor, sy: Tensor,
                   qx: Optional[Tensor] = None, training: bool = True) -> Tuple[Params, List[Tensor]]:
    """(fast weights, [query logits (Q, N) after each of loop.query_after]) of one task (no logits if qx
    is None). sx (S, C, H, W), sy (S,). training=False (evaluation) cuts the graph after every step:
    the fast weights come back detached."""
    create_graph = training and not loop.first_order
    run = checkpointed_forward if loop.checkpoint and training else forward
    names, model, loss_fn, state = loop.names, loop.model, loop.loss_fn, loop.state
    wanted = loop.query_after if qx is not None else ()
    logits: List[Tensor] = []
    outer_grad = training and torch.is_grad_enabled()
    with torch.enable_grad():
        fast = _start(loop, params, buffers, sx, sy)
        if loop.init is not None and training:
            # step 0's gradient is the partial derivative at the fast weights: give θ's entries their own
            # graph nodes, so the path θ -> initialisation -> loss is not counted in it
            fast.update({n: params[n].view_as(params[n]) for n in names if fast[n] is params[n]})
        if not training:
            fast = {n: t.detach() for n, t in fast.items()}
            for name in names:
                fast[name].requires_grad_(True)
        if 0 in wanted:
            with torch.set_grad_enabled(outer_grad):
                logits.append(_query(loop, fast, buffers, qx, 0))
        for step in range(loop.steps):
            if state is None:
                loss = loss_fn(run(model, fast, buffers, sx), sy)
            else:
                p, b = loop.with_state(fast, buffers, step)
                loss = loss_fn(run(model, p, b, sx), sy)
            grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=create_graph, allow_unused=True)
            fast = update(fast, dict(zip(names, grads)), loop.rates_at(step))
            if not training:
                for name in names:
                    fast[name] = fast[name].detach().requires_grad_(True)
            if step + 1 in wanted:
                with torch.set_grad_enabled(outer_grad):
                    logits.append(_query(loop, fast, buffers, qx, step + 1))
    if not training:
        fast = {n: t.detach() for n, t in fast.items()}
    return fast, logits


def _query(loop: InnerLoop, fast: Params, buffers: Params, qx: Tensor, updates: int) -> Tensor:
    p, b = loop.with_state(fast, buffers, max(updates - 1, 0))
    return forward(loop.model, p, b, qx)


def run_vectorised(loop: InnerLoop, params: Params, buffers: Params, sx: Tensor, sy: Tensor, qx: Tensor,
                   chunk: Optional[int] = None, need_fast: bool = False) -> Tuple[Tensor, Optional[Params]]:
    """Query logits (T, U, Q, N) for U = len(loop.query_after), and the adapted fast weights (T, ...) if
    ``need_fast``, of all tasks vmapped. sx (T, S, C, H, W), sy (T, S), qx (T, Q, C, H, W). Differentiable
    w.r.t. θ and tensor rates unless called under no_grad; ``chunk`` tasks at a time (None: all)."""
    names, model, wanted = loop.names, loop.model, loop.query_after
    buffers = dict(buffers)
    first_order = loop.first_order

    def support_loss(adapted: Params, rest: Params, bufs: Params, x: Tensor, y: Tensor) -> Tensor:
        return loop.loss_fn(forward(model, {**rest, **adapted}, bufs, x), y)

    inner_grad = grad(support_loss)

    def query(fast: Params, rest: Params, x: Tensor, updates: int) -> Tensor:
        p, b = loop.with_state({**rest, **fast}, buffers, max(updates - 1, 0))
        return forward(model, p, b, x)

    def one_task(theta: Params, x: Tensor, y: Tensor, q: Tensor):
        start = _start(loop, theta, buffers, x, y)
        fast = {n: start[n] for n in names}
        rest = {n: t for n, t in start.items() if n not in fast}
        out = [query(fast, rest, q, 0)] if 0 in wanted else []
        for step in range(loop.steps):
            p, b = loop.with_state(rest, buffers, step)
            g = inner_grad(fast, p, b, x, y)
            fast = update(fast, {n: g[n].detach() if first_order else g[n] for n in names}, loop.rates_at(step))
            if step + 1 in wanted:
                out.append(query(fast, rest, q, step + 1))
        return (torch.stack(out), fast) if need_fast else torch.stack(out)

    tasks = sx.shape[0]
    chunk = tasks if chunk is None else max(1, min(int(chunk), tasks))
    mapped = vmap(one_task, in_dims=(None, 0, 0, 0), randomness="different")
    logits: List[Tensor] = []
    fasts: List[Params] = []
    primitive = not first_order or torch.is_autocast_enabled(sx.device.type)
    with PrimitiveBatchNorm() if primitive else contextlib.nullcontext():
        for start in range(0, tasks, chunk):
            end = start + chunk
            out = mapped(params, sx[start:end], sy[start:end], qx[start:end])
            if need_fast:
                out, fast = out
                fasts.append(fast)
            logits.append(out)
    fast_all = None
    if need_fast:
        fast_all = {n: torch.cat([f[n] for f in fasts]) for n in names}
    return (logits[0] if len(logits) == 1 else torch.cat(logits)), fast_all


def run_first_order(loop: InnerLoop, inner, params: Params, buffers: Params, sx: Tensor, sy: Tensor,
                    qx: Optional[Tensor], training: bool, batched: bool = False) -> Tuple[Params, List[Tensor]]:
    """(fast weights, [query logits after each of loop.query_after]) with no-grad inner steps of ``inner``
    (a CompiledInner); first order. One task (sx (S, ...)) or, with ``batched``, all tasks (sx (T, S, ...);
    fast weights and logits then carry a leading task dimension). training=False: detached results.
    training=True: fast = start - sum_s rate_s * g_s, differentiable w.r.t. θ, tensor rates and the
    initialisation (kept with its graph), the first-order meta-gradient."""
    names = loop.names
    step_fn = inner.step(batched)
    tasks = sx.shape[0] if batched else None
    if loop.init is None:
        start = params
        per_task: frozenset = frozenset()
    else:
        p0, b0 = loop.with_state(params, buffers, 0)
        if batched:
            init = vmap(lambda x, y: loop.init(p0, b0, x, y), randomness="different")(sx, sy)
        else:
            init = loop.init(p0, b0, sx, sy)
        start = {**params, **init}
        per_task = frozenset(init) if batched else frozenset()
    if not training:
        start = {n: t.detach() for n, t in start.items()}
    fast = {n: start[n].detach().contiguous() for n in names}  # one layout for every step: no recompiles
    if batched:
        fast = {n: p if n in per_task else p.expand(tasks, *p.shape).contiguous() for n, p in fast.items()}
    rest = {n: t.detach() for n, t in start.items() if n not in fast}
    wanted = loop.query_after if qx is not None else ()
    grads: List[Params] = []  # per step, only with per-step rates
    total: Optional[Params] = None
    snapshots: List[Tuple[int, Params, Optional[Params]]] = []

    def state(index: int, attached: bool) -> Tuple[Params, Params]:
        if loop.state is None:
            return {}, {}
        p, b = loop.state(index)
        return (p, b) if attached else ({n: t.detach() for n, t in p.items()}, b)

    if 0 in wanted:
        snapshots.append((0, dict(fast), None))
    with torch.no_grad():
        for step in range(loop.steps):
            p, b = state(step, attached=False)
            r = {n: (v.detach() if isinstance(v, Tensor) else v) for n, v in loop.rates_at(step).items()}
            fast, g = step_fn(fast, {**rest, **p}, {**buffers, **b}, sx, sy, r)
            if loop._per_step:
                grads.append(g)
            total = g if total is None else {n: total[n] + g[n] for n in names}
            if step + 1 in wanted:
                snapshots.append((step + 1, dict(fast), total))

    def rebuilt(updates: int, total_u: Optional[Params]) -> Params:
        if updates == 0 or total_u is None:
            return {**start, **{n: start[n] if n in per_task or not batched else start[n].expand(tasks, *start[n].shape)
                                for n in names}}
        if not loop._per_step:
            return update(start, total_u, loop.rates)  # one step with the summed gradient
        moved = {n: start[n] - sum(loop.rates_at(s)[n] * grads[s][n] for s in range(updates)) for n in names}
        return {**start, **moved}

    logits: List[Tensor] = []
    forward_fn = inner.forward(batched)
    for updates, fast_u, total_u in snapshots:
        if training:
            weights = rebuilt(updates, total_u)
            adapted = {n: weights[n] for n in names}
            other = {n: t for n, t in weights.items() if n not in adapted}
            p, b = state(max(updates - 1, 0), attached=True)
            logits.append(forward_fn(adapted, {**other, **p}, {**buffers, **b}, qx))
        else:
            p, b = state(max(updates - 1, 0), attached=False)
            with torch.no_grad():
                logits.append(forward_fn(fast_u, {**rest, **p}, {**buffers, **b}, qx))
    if not training:
        return {**rest, **fast}, logits
    return rebuilt(loop.steps, total), logits
