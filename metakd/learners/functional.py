"""The functional core of the gradient-based learners: parameters are a dict of tensors.

A model is any ordinary ``nn.Module``; its parameters are swapped for a dict of tensors with
``torch.func.functional_call``, so the inner loop is plain tensor math: no module cloning, no
monkey-patching, no per-task state. The inner loop itself is ``inner_loop.py``.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Mapping, Sequence, Union

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


def submodule_forward(model: nn.Module, name: str, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
                      x: Tensor) -> Tensor:
    """``model.<name>(x)`` with its parameters and buffers taken from the whole model's dicts."""
    cut = len(name) + 1
    p = {k[cut:]: v for k, v in params.items() if k.startswith(name + ".")}
    b = {k[cut:]: v for k, v in buffers.items() if k.startswith(name + ".")}
    return functional_call(getattr(model, name), (p, b), (x,))


def checkpointed_forward(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
                         x: Tensor) -> Tensor:
    """:func:`forward` whose activations are recomputed when needed instead of kept (non-reentrant
    torch.utils.checkpoint, which supports the double backward of second-order MAML)."""
    names = list(params)

    def run(inp: Tensor, *values: Tensor) -> Tensor:
        return forward(model, dict(zip(names, values)), buffers, inp)

    return _checkpoint(run, x, *[params[n] for n in names], use_reentrant=False)


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
