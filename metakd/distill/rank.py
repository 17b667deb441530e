"""Kendall's τ ranking loss for logit distillation (RKKD), computed in memory-bounded chunks.

For student logits s and teacher logits t over C channels,
``τ̃ = 2/(C(C−1)) Σ_{i<j} f(s_i − s_j, t_i − t_j)`` with the pair function f chosen by ``form``:

- ``"tanh"``:    ``tanh(k·Δs)·tanh(k·Δt)`` (RKKD's main form; k = 100 is near a sign function),
- ``"sigmoid"``: ``2σ(β·Δs·Δt) − 1`` (= ``tanh(β·Δs·Δt / 2)``, DiffKendall),
- ``"sign"``:    ``sign(Δs)·sign(Δt)``, the exact τ-a (zero gradient; for evaluation).

Memory. The pairs form a (B, C, C) tensor (1 GB in fp32 at B = 256, C = 1000). Here the strictly
upper triangle is visited in row blocks ``[a, b) × [a, C)``: inside the diagonal square each pair
appears twice and is halved, which is exact because every f above is even under
``(Δs, Δt) → (−Δs, −Δt)``. A ``torch.autograd.Function`` keeps only s and t for backward and
recomputes each block there with the analytic pair derivatives (which are odd, so
``∂S/∂s_m = Σ_j ∂f/∂Δs (s_m − s_j, t_m − t_j)``: row sums of a block, minus its column sums for the
columns right of it). At most three block-sized temporaries are alive at a time (two when only one
input needs a gradient), so the peak intermediate memory is

    peak ≈ 3 · B_c · n · (C − a) · itemsize   (+ O(B·C) for inputs and gradients)

for a block of n rows starting at row a over a batch slice of B_c samples. With ``chunk_size=None``
n (growing as the triangle narrows) and B_c are chosen so that this stays under ``memory_budget``
bytes (default 64 MiB); a fixed ``chunk_size`` gives ``peak ≤ 3 · B · chunk_size · C · itemsize``.
benchmarks/rank_memory.py measured, on CPU at B = 256, C = 1000, forward + backward: 44 MiB
(auto) against 5.7 GiB for the naive (B, C, C) autograd version.

Gradients flow to both arguments (the consistency losses need the mean-view target to receive
them); detach the teacher when it must not. Note that at k = 100 the tanh form has almost zero
gradient for pairs whose student logits differ by more than about 0.1.

Sharpness relative to the logit scale (``k_scale="std"``). With ``k_scale="absolute"`` (default) k
multiplies raw logit gaps, so how soft the tanh is depends on the logits' scale: at k = 100 a pair whose
student gap exceeds ~0.05 is saturated (tanh'(5) ≈ 2e-4) and gives no gradient, discordant pairs
included, which is the common case once logits have spread (few-shot heads with 5 channels, or any
confident student). ``k_scale="std"`` divides each row by its own spread before the pair function,
i.e. uses the per-sample sharpness ``k / std(row)`` (population std over the channels the loss sees,
i.e. after a top/bottom subset; floored at 1e-6). Student and teacher rows are each divided by their
own std, and the gradient flows through the std: the loss is then a function of the standardised
logits only, exactly invariant to a positive rescaling (and a shift) of either argument, so its
gradient has no component along the logits' own scale direction (it cannot be lowered by inflating
the logits, which the absolute form rewards). It equals the absolute form in value when the spread is
1 (the gradient is then the absolute one minus its projection on the centred student row), and
still tends to the exact (sign) τ as k → ∞. Note that a useful relative k depends on C: adjacent
standardised gaps of evenly spread logits are √(12 / (C² − 1)) (0.71 at C = 5, 0.035 at C = 100);
benchmarks/distill_rank_sharpness.py measures it. For the sigmoid form the same division applies to both
arguments of ``β·Δs·Δt``; the sign form is unaffected.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..validate import positive_int
from ..registry import LOSSES

FORMS = ("tanh", "sigmoid", "sign")
SUBSETS = ("all", "top", "bottom")
K_SCALES = ("absolute", "std")
STD_FLOOR = 1e-6
RANK_REDUCTIONS = ("mean", "sum", "none")
DEFAULT_MEMORY_BUDGET = 64 * 2**20
LIVE_BLOCKS = 3  # block-sized temporaries alive at once (backward with both inputs needing grad)


def plan_chunks(
    batch: int,
    channels: int,
    itemsize: int,
    chunk_size: Optional[int] = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Tuple[int, List[Tuple[int, int]]]:
    """Batch slice size and row ranges ``[(a, b), ...]`` covering ``0..channels`` (see module docstring)."""
    if chunk_size is not None:
        positive_int(chunk_size, "chunk_size (or None)", source="rank loss")
        return batch, [(a, min(a + chunk_size, channels)) for a in range(0, channels, chunk_size)]
    positive_int(memory_budget, "memory_budget (bytes)", source="rank loss")
    budget_elems = max(1, memory_budget // (LIVE_BLOCKS * itemsize))
    batch_chunk = batch if batch * channels <= budget_elems else max(1, budget_elems // channels)
    rows: List[Tuple[int, int]] = []
    a = 0
    while a < channels:
        width = channels - a
        n = max(1, min(width, budget_elems // (batch_chunk * width)))
        rows.append((a, a + n))
        a += n
    return batch_chunk, rows


def _pair_values(ds: Tensor, dt: Tensor, form: str, k: float, beta: float) -> Tensor:
    """f(Δs, Δt) computed in place into ``ds`` (consumes both blocks)."""
    if form == "tanh":
        ds.mul_(k).tanh_().mul_(dt.mul_(k).tanh_())
    elif form == "sigmoid":
        ds.mul_(dt).mul_(beta).sigmoid_().mul_(2.0).sub_(1.0)
    else:
        ds.sign_().mul_(dt.sign_())
    return ds


def _pair_grads(
    ds: Tensor, dt: Tensor, form: str, k: float, beta: float, need_s: bool, need_t: bool, inplace: bool
) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """(∂f/∂Δs, ∂f/∂Δt) blocks; ``inplace`` reuses the ``ds``/``dt`` storage (not differentiable)."""
    if form == "sign":
        return (torch.zeros_like(ds) if need_s else None), (torch.zeros_like(dt) if need_t else None)
    if form == "tanh":
        if not inplace:
            th_s, th_t = torch.tanh(k * ds), torch.tanh(k * dt)
            gs = k * (1.0 - th_s * th_s) * th_t if need_s else None
            gt = k * (1.0 - th_t * th_t) * th_s if need_t else None
            return gs, gt
        th_s = ds.mul_(k).tanh_()
        th_t = dt.mul_(k).tanh_()
        gs = gt = None
        if need_t:
            gt = th_t.square().neg_().add_(1.0).mul_(th_s).mul_(k)
        if need_s:
            gs = th_s.square_().neg_().add_(1.0).mul_(th_t).mul_(k)
        return gs, gt
    # sigmoid: d/dx (2σ(βx) − 1) = 2β σ(βx)(1 − σ(βx)) = β / (2 cosh²(βx/2)), x = Δs·Δt
    if not inplace:
        sig = torch.sigmoid(beta * ds * dt)
        w = 2.0 * beta * sig * (1.0 - sig)
        return (w * dt if need_s else None), (w * ds if need_t else None)
    w = ds * dt
    w.mul_(0.5 * beta).cosh_().square_().reciprocal_().mul_(0.5 * beta)
    gs = dt.mul_(w) if need_s else None
    gt = ds.mul_(w) if need_t else None
    return gs, gt


class _PairwiseTau(torch.autograd.Function):
    """τ̃ per row of (B, C) inputs, chunked forward and recomputed chunked backward.

    The backward is itself differentiable (out-of-place formulas) when called with
    ``create_graph=True``, e.g. inside a second-order MAML inner loop; that second-order graph holds
    every block, so its memory is not bounded.
    """

    @staticmethod
    def forward(s: Tensor, t: Tensor, form: str, k: float, beta: float, batch_chunk: int, rows) -> Tensor:
        B, C = s.shape
        total = s.new_zeros(B)
        with torch.no_grad():
            for b0 in range(0, B, batch_chunk):
                sb, tb = s[b0 : b0 + batch_chunk], t[b0 : b0 + batch_chunk]
                for a, b in rows:
                    n = b - a
                    f = _pair_values(
                        sb[:, a:b, None] - sb[:, None, a:], tb[:, a:b, None] - tb[:, None, a:], form, k, beta
                    )
                    total[b0 : b0 + batch_chunk] += 0.5 * f[:, :, :n].sum(dim=(1, 2)) + f[:, :, n:].sum(dim=(1, 2))
                    del f
        return total / (C * (C - 1) / 2)  # division keeps exact pair counts exact

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        s, t, form, k, beta, batch_chunk, rows = inputs
        ctx.save_for_backward(s, t)
        ctx.cfg = (form, k, beta, batch_chunk, rows)

    @staticmethod
    def backward(ctx, grad_tau: Tensor):
        s, t = ctx.saved_tensors
        form, k, beta, batch_chunk, rows = ctx.cfg
        need_s, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_s or need_t):
            return (None,) * 7
        inplace = not torch.is_grad_enabled()
        B, C = s.shape
        grad_s = torch.zeros_like(s) if need_s else None
        grad_t = torch.zeros_like(t) if need_t else None
        for b0 in range(0, B, batch_chunk):
            sl = slice(b0, b0 + batch_chunk)
            sb, tb = s[sl], t[sl]
            for a, b in rows:
                n = b - a
                gs, gt = _pair_grads(
                    sb[:, a:b, None] - sb[:, None, a:], tb[:, a:b, None] - tb[:, None, a:],
                    form, k, beta, need_s, need_t, inplace,
                )
                for g, out in ((gs, grad_s), (gt, grad_t)):
                    if g is None:
                        continue
                    out[sl, a:b] += g.sum(dim=2)
                    out[sl, b:] -= g[:, :, n:].sum(dim=1)
                del gs, gt
        scale = grad_tau.reshape(B, 1) / (C * (C - 1) / 2)
        return (
            grad_s * scale if need_s else None,
            grad_t * scale if need_t else None,
            None, None, None, None, None,
        )


def _check_pair_inputs(name: str, s: Tensor, t: Tensor, form: str, k: float, beta: float) -> None:
    if s.dim() != 2 or s.shape != t.shape:
        raise DataError(
            f"{name}: expected two (B, C) tensors of the same shape, got {tuple(s.shape)} and {tuple(t.shape)}"
        )
    if s.shape[1] < 2:
        raise DataError(f"{name}: Kendall's tau needs at least 2 channels, got C={s.shape[1]}")
    if form not in FORMS:
        raise ConfigError(f"{name}: form must be one of {FORMS}, got {form!r}")
    if not (isinstance(k, (int, float)) and k > 0):
        raise ConfigError(f"{name}: k (tanh sharpness) must be a positive number, got {k!r}")
    if not (isinstance(beta, (int, float)) and beta > 0):
        raise ConfigError(f"{name}: beta (sigmoid sharpness) must be a positive number, got {beta!r}")


def pairwise_tau(
    s: Tensor,
    t: Tensor,
    form: str = "tanh",
    k: float = 100.0,
    beta: float = 1.0,
    chunk_size: Optional[int] = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Tensor:
    """Differentiable τ̃ per row, (B, C) x (B, C) -> (B,), computed in bounded-memory chunks."""
    _check_pair_inputs("pairwise_tau", s, t, form, k, beta)
    t = t.to(s.dtype)
    batch_chunk, rows = plan_chunks(s.shape[0], s.shape[1], s.element_size(), chunk_size, memory_budget)
    return _PairwiseTau.apply(s, t, form, float(k), float(beta), batch_chunk, rows)


def pairwise_tau_reference(s: Tensor, t: Tensor, form: str = "tanh", k: float = 100.0, beta: float = 1.0) -> Tensor:
    """The same τ̃ built naively as a full (B, C, C) tensor with plain autograd (for tests and benchmarks)."""
    _check_pair_inputs("pairwise_tau_reference", s, t, form, k, beta)
    t = t.to(s.dtype)
    C = s.shape[1]
    ds = s[:, :, None] - s[:, None, :]
    dt = t[:, :, None] - t[:, None, :]
    if form == "tanh":
        f = torch.tanh(k * ds) * torch.tanh(k * dt)
    elif form == "sigmoid":
        f = 2.0 * torch.sigmoid(beta * ds * dt) - 1.0
    else:
        f = torch.sign(ds) * torch.sign(dt)
    upper = torch.ones(C, C, dtype=torch.bool, device=s.device).triu(diagonal=1)
    return (f * upper).sum(dim=(1, 2)) * (2.0 / (C * (C - 1)))


def standardize_scale(x: Tensor) -> Tensor:
    """``x / std(x)`` per row (population std over the last dim, floored at 1e-6; differentiable through
    the std): (B, C) -> (B, C). Not centred: pair functions only see differences. Used by ``k_scale="std"``.
    """
    if x.dim() != 2:
        raise DataError(f"standardize_scale: expected (B, C) logits, got shape {tuple(x.shape)}")
    return x / x.std(dim=1, correction=0, keepdim=True).clamp_min(STD_FLOOR)


def subset_indices(teacher_logits: Tensor, subset: str = "top", fraction: float = 0.1) -> Tensor:
    """Per-sample indices (B, m) of the teacher's top or bottom ``fraction`` of channels.

    m = min(C, max(2, ceil(fraction · C))): at least one pair is always left. Indices are in order
    of decreasing (top) or increasing (bottom) teacher logit.
    """
    if subset not in ("top", "bottom"):
        raise ConfigError(f"subset_indices: subset must be 'top' or 'bottom', got {subset!r}")
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ConfigError(f"rank loss: fraction must be in (0, 1], got {fraction!r}")
    if teacher_logits.dim() != 2:
        raise DataError(f"subset_indices: expected (B, C) teacher logits, got shape {tuple(teacher_logits.shape)}")
    C = teacher_logits.shape[1]
    m = min(C, max(2, math.ceil(fraction * C)))
    return teacher_logits.topk(m, dim=1, largest=(subset == "top")).indices


@LOSSES.register("rank")
def rank_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    form: str = "tanh",
    k: float = 100.0,
    beta: float = 1.0,
    subset: str = "all",
    fraction: float = 0.1,
    chunk_size: Optional[int] = None,
    reduction: str = "mean",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    k_scale: str = "absolute",
) -> Tensor:
    """Kendall rank distillation loss ``1 − τ̃(s, t)`` on logits, (B, C) x (B, C) -> scalar or (B,).

    form: "tanh" (sharpness k), "sigmoid" (DiffKendall, sharpness beta; the reference material gives
    no value, 1.0 is this library's default) or "sign" (exact, no gradient). subset: "all" pairs, or
    all pairs among the teacher's "top"/"bottom" ``fraction`` of channels per sample (see
    ``subset_indices``). chunk_size / memory_budget: see the module docstring for the peak-memory
    formula. reduction: "mean" over the batch, "sum", or "none" for (B,). k_scale: "absolute" (k
    multiplies raw logit gaps) or "std" (per-sample sharpness k / std of the row, see the module
    docstring). The loss lies in [0, 2]: 0 for the teacher's order, 2 for the reversed order.
    """
    if k_scale not in K_SCALES:
        raise ConfigError(f"rank_loss: k_scale must be one of {K_SCALES}, got {k_scale!r}")
    if subset not in SUBSETS:
        raise ConfigError(f"rank_loss: subset must be one of {SUBSETS}, got {subset!r}")
    if reduction not in RANK_REDUCTIONS:
        raise ConfigError(f"rank_loss: reduction must be one of {RANK_REDUCTIONS}, got {reduction!r}")
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise DataError(
            "rank_loss: expected (B, C) student and teacher logits of the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    s, t = student_logits, teacher_logits
    if subset != "all":
        idx = subset_indices(t.detach(), subset, fraction)
        s, t = s.gather(1, idx), t.gather(1, idx)
    if k_scale == "std":
        s, t = standardize_scale(s), standardize_scale(t)
    per_sample = 1.0 - pairwise_tau(s, t, form, k, beta, chunk_size, memory_budget)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def kendall_tau(
    a: Tensor,
    b: Tensor,
    form: str = "sign",
    k: float = 100.0,
    beta: float = 1.0,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """Kendall's τ between a and b per row: (B, C) -> (B,), or (C,) -> 0-dim.

    The default hard "sign" form is the exact τ-a (pairs tied in a or b count 0), which equals
    scipy's τ-b when there are no ties. Other forms give the differentiable τ̃.
    """
    if a.dim() == 1 and b.dim() == 1:
        return pairwise_tau(a[None], b[None], form, k, beta, chunk_size)[0]
    return pairwise_tau(a, b, form, k, beta, chunk_size)
