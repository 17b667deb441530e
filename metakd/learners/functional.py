"""The functional core of the gradient-based learners: parameters are a dict of tensors.

A model is any ordinary ``nn.Module``; its parameters are swapped for a dict of tensors with
``torch.func.functional_call``, so the inner loop is plain tensor math: no module cloning, no
monkey-patching, no per-task state. :func:`inner_loop` is a pure function of
(params, support_x, support_y) -> fast params, so a later version can batch it over tasks.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint as _checkpoint

from ..errors import ConfigError

Params = Dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
AdaptSpec = Union[str, Sequence[str]]


def forward(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """model(x) with its parameters replaced by ``params`` and its buffers by ``buffers``."""
    return functional_call(model, (dict(params), dict(buffers)), (x,))


def checkpointed_forward(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
                         x: Tensor) -> Tensor:
    """:func:`forward` whose activations are recomputed when needed instead of kept (non-reentrant
    torch.utils.checkpoint, which supports the double backward of second-order MAML)."""
    names = list(params)

    def run(inp: Tensor, *values: Tensor) -> Tensor:
        return forward(model, dict(zip(names, values)), buffers, inp)

    return _checkpoint(run, x, *[params[n] for n in names], use_reentrant=False)


def sgd_step(loss: Tensor, params: Params, names: Sequence[str], lrs: Mapping[str, Union[float, Tensor]],
             create_graph: bool) -> Params:
    """One gradient step on ``loss`` for the parameters ``names``: p - lr * dloss/dp; the others unchanged.

    With ``create_graph`` the step is differentiable (second order); without it the gradients are
    constants and only the identity path p -> p' carries the outer gradient (first order).
    """
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True)
    fast = dict(params)
    for name, grad in zip(names, grads):
        if grad is not None:
            fast[name] = params[name] - lrs[name] * grad
    return fast


def inner_loop(model: nn.Module, params: Params, buffers: Mapping[str, Tensor], support_x: Tensor,
               support_y: Tensor, names: Sequence[str], lrs: Mapping[str, Union[float, Tensor]], steps: int,
               create_graph: bool, keep_graph: bool = True, loss_fn: LossFn = F.cross_entropy,
               checkpoint: bool = False) -> Params:
    """``steps`` gradient steps of ``loss_fn(model(support_x), support_y)`` on ``names``; returns fast params.

    support_x (S, C, H, W), support_y (S,). ``keep_graph=False`` (evaluation) cuts the graph after every
    step, so memory does not grow with the steps and the result is detached from ``params``; the
    gradients of the inner loop are still computed by autograd. ``checkpoint`` (with keep_graph)
    recomputes each support forward's activations in the backward passes instead of keeping them.
    """
    run = checkpointed_forward if checkpoint and keep_graph else forward
    fast = dict(params)
    if not keep_graph:
        for name in names:
            fast[name] = fast[name].detach().requires_grad_(True)
    with torch.enable_grad():
        for _ in range(steps):
            loss = loss_fn(run(model, fast, buffers, support_x), support_y)
            fast = sgd_step(loss, fast, names, lrs, create_graph=create_graph and keep_graph)
            if not keep_graph:
                for name in names:
                    fast[name] = fast[name].detach().requires_grad_(True)
    if not keep_graph:
        fast = {name: t.detach() for name, t in fast.items()}
    return fast


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def select_names(named: Iterable[str], spec: AdaptSpec, head_name: str) -> List[str]:
    """The parameter names an ``adapt`` spec picks out of ``named`` (in order).

    spec: "all"; "head" (names under ``head_name``); "body" (all but the head); or a list of name
    prefixes (a prefix matches the name itself or the names below it: "features.0" -> "features.0.weight").
    """
    names = list(named)
    head = [n for n in names if _under(n, head_name)]
    prefixes = sorted({n.split(".")[0] for n in names})
    if spec in ("head", "body") and not head:
        raise ConfigError(
            f"adapt={spec!r} needs the model's classifier parameters under head_name={head_name!r}, but the model "
            f"has none (its top-level parameter prefixes: {', '.join(prefixes) or '(none)'}); give the model a "
            f"`head` submodule or set head_name to the prefix of its classifier"
        )
    if spec == "all":
        chosen = names
    elif spec == "head":
        chosen = head
    elif spec == "body":
        chosen = [n for n in names if n not in head]
    elif isinstance(spec, (list, tuple)) and spec and all(isinstance(p, str) for p in spec):
        for prefix in spec:
            if not any(_under(n, prefix) for n in names):
                raise ConfigError(
                    f"adapt prefix {prefix!r} matches no trainable parameter; top-level prefixes: "
                    f"{', '.join(prefixes) or '(none)'}"
                )
        chosen = [n for n in names if any(_under(n, p) for p in spec)]
    else:
        raise ConfigError(f"option adapt={spec!r}: expected 'all', 'head', 'body' or a list of parameter-name prefixes")
    if not chosen:
        raise ConfigError(f"adapt={spec!r} selects no trainable parameter (head_name={head_name!r})")
    return chosen
