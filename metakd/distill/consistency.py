"""Consistency losses across augmented views for Meta Self-Distillation (MSD), and its metric.

Input everywhere: ``v`` of shape (n_views, Q, C), the query logits of the same query set under
the fast weights adapted on each augmented view of the support set. Each loss compares every
view with the mean view v̄ and averages over views and queries; it is 0 when all views agree.
By default gradients flow through v̄ as well (``detach_mean=True`` treats v̄ as a fixed target).
``temperature`` may be a float or a tensor (learned in the outer loop); no T² factor is applied.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, DataError
from ..registry import LOSSES
from .rank import rank_loss

Temperature = Union[float, Tensor]
CONSISTENCY_ON = ("prob", "logit")
KL_DIRECTIONS = ("mean_to_view", "view_to_mean")


def _check_views(name: str, v: Tensor) -> None:
    if not isinstance(v, Tensor) or v.dim() != 3:
        shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise DataError(f"{name}: expected view logits of shape (n_views, Q, C), got {shape}")
    if v.shape[0] < 1 or v.shape[2] < 1:
        raise DataError(f"{name}: need at least one view and one class, got shape {tuple(v.shape)}")


def _check_temperature(name: str, temperature: Temperature) -> None:
    if isinstance(temperature, Tensor):
        return
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ConfigError(f"{name}: temperature must be a positive number or a tensor, got {temperature!r}")


def _unit(x: Tensor, eps: float = 1e-12) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


@LOSSES.register("cosine_consistency")
def cosine_consistency(
    v: Tensor, on: str = "prob", temperature: Temperature = 1.0, detach_mean: bool = False
) -> Tensor:
    """``(1/n) Σ_j mean_q (1 − cos(u_j,q, ū_q))`` with u = softmax(v / T) (on="prob", default) or
    u = v / T (on="logit"; cosine of logits ignores T and is not shift-invariant) and ū the mean of u
    over views. ``1 − cos(a, b)`` is computed as ``½‖a/‖a‖ − b/‖b‖‖²``, which is ≥ 0 and exactly
    0 for parallel vectors. (n_views, Q, C) -> scalar in [0, 2].
    """
    _check_views("cosine_consistency", v)
    _check_temperature("cosine_consistency", temperature)
    if on not in CONSISTENCY_ON:
        raise ConfigError(f"cosine_consistency: on must be one of {CONSISTENCY_ON}, got {on!r}")
    u = v / temperature
    if on == "prob":
        u = F.softmax(u, dim=-1)
    mean = u.mean(dim=0, keepdim=True)
    if detach_mean:
        mean = mean.detach()
    return 0.5 * (_unit(u) - _unit(mean)).square().sum(dim=-1).mean()


@LOSSES.register("kl_consistency")
def kl_consistency(
    v: Tensor,
    temperature: Temperature = 1.0,
    direction: str = "mean_to_view",
    detach_mean: bool = False,
) -> Tensor:
    """Mean over views and queries of a KL between each view's softmax(v_j / T) and the mean
    distribution p̄ = mean_j softmax(v_j / T), summed over classes.

    direction="mean_to_view" (default): ``KL(p̄ || p_j)``; "view_to_mean": ``KL(p_j || p̄)``, which
    averaged over views is the generalised Jensen-Shannon divergence (bounded by log n).
    (n_views, Q, C) -> scalar ≥ 0.
    """
    _check_views("kl_consistency", v)
    _check_temperature("kl_consistency", temperature)
    if direction not in KL_DIRECTIONS:
        raise ConfigError(f"kl_consistency: direction must be one of {KL_DIRECTIONS}, got {direction!r}")
    log_p = F.log_softmax(v / temperature, dim=-1)
    n = v.shape[0]
    log_mean = torch.logsumexp(log_p, dim=0, keepdim=True) - math.log(n)
    if detach_mean:
        log_mean = log_mean.detach()
    if direction == "mean_to_view":
        kl = (log_mean.exp() * (log_mean - log_p)).sum(dim=-1)
    else:
        kl = (log_p.exp() * (log_p - log_mean)).sum(dim=-1)
    return kl.mean()


@LOSSES.register("rank_consistency")
def rank_consistency(
    v: Tensor,
    temperature: Temperature = 1.0,
    form: str = "tanh",
    k: float = 100.0,
    beta: float = 1.0,
    subset: str = "all",
    fraction: float = 0.1,
    chunk_size: Optional[int] = None,
    detach_mean: bool = False,
    k_scale: str = "absolute",
) -> Tensor:
    """``mean_j rank_loss(v_j / T, v̄ / T)`` with v̄ the mean logits over views (ranks are taken on
    logits, as in RKKD); T only changes the effective sharpness (k/T or β/T²). Subsets are chosen by
    v̄'s top/bottom channels. k_scale="std" makes the sharpness relative to each row's spread (then T
    has no effect; see ``metakd.distill.rank``). (n_views, Q, C) -> scalar in [0, 2].
    """
    _check_views("rank_consistency", v)
    _check_temperature("rank_consistency", temperature)
    n, q, c = v.shape
    u = v / temperature
    mean = u.mean(dim=0, keepdim=True)
    if detach_mean:
        mean = mean.detach()
    target = mean.expand(n, q, c).reshape(n * q, c)
    return rank_loss(
        u.reshape(n * q, c), target, form=form, k=k, beta=beta, subset=subset, fraction=fraction,
        chunk_size=chunk_size, reduction="mean", k_scale=k_scale,
    )


def prediction_consistency(v: Tensor) -> Tensor:
    """MSD's evaluation metric: the mean over queries and over all unordered view pairs j < l of
    ``cos(softmax(v_j,q), softmax(v_l,q))``. (n_views ≥ 2, Q, C) -> 0-dim tensor in (0, 1]; 1 when
    all views predict the same distribution. Differentiable; detach it for logging.
    """
    _check_views("prediction_consistency", v)
    n = v.shape[0]
    if n < 2:
        raise DataError(f"prediction_consistency: needs at least 2 views, got {n}")
    p = _unit(F.softmax(v, dim=-1))
    gram = torch.einsum("jqc,lqc->qjl", p, p)
    j, l = torch.triu_indices(n, n, offset=1, device=v.device)
    return gram[:, j, l].mean()
