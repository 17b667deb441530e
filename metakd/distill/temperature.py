"""Learnable distillation temperatures and the Meta Knowledge Distillation (MKD) step.

A temperature is parametrised as ``τ = τ_min + (τ_max − τ_min)·σ(r)`` so it stays positive and
bounded whatever the optimizer does (default range [1, 21]). MKD (Liu et al. 2022) learns separate
teacher and student temperatures by the held-out cross-entropy of a look-ahead student; see
``mkd_step``.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..errors import ConfigError, DataError
from .kd import kd_loss
from .rank import rank_loss


class LearnableTemperature(nn.Module):
    """A bounded positive temperature ``τ = t_min + (t_max − t_min)·σ(raw)``; ``forward()`` returns τ.

    init: the starting τ, strictly inside (t_min, t_max); ``raw`` is set by the inverse sigmoid.
    shape: () for one scalar, (B, 1) or (C,) style shapes for several temperatures.
    """

    def __init__(self, init: float = 4.0, t_min: float = 1.0, t_max: float = 21.0, shape: Sequence[int] = ()):
        super().__init__()
        if not (0 < t_min < t_max):
            raise ConfigError(f"LearnableTemperature: need 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}")
        if not (t_min < init < t_max):
            raise ConfigError(
                f"LearnableTemperature: init must lie strictly inside ({t_min}, {t_max}), got {init}"
            )
        self.t_min, self.t_max = float(t_min), float(t_max)
        u = (init - t_min) / (t_max - t_min)
        self.raw = nn.Parameter(torch.full(tuple(shape), math.log(u / (1.0 - u))))

    def forward(self) -> Tensor:
        return self.t_min + (self.t_max - self.t_min) * torch.sigmoid(self.raw)

    @property
    def value(self) -> float:
        """The current temperature as a float (mean if not scalar)."""
        return float(self().detach().mean())

    def extra_repr(self) -> str:
        return f"value={self.value:.4g}, range=[{self.t_min:g}, {self.t_max:g}]"


class MetaTemperatures(nn.Module):
    """Teacher and student temperatures for KD; ``forward()`` returns ``(τ_teacher, τ_student)``.

    shared=True uses one temperature for both (init_teacher is its start). learn_teacher /
    learn_student=False freeze that temperature at its initial value.
    """

    def __init__(
        self,
        init_teacher: float = 4.0,
        init_student: float = 4.0,
        t_min: float = 1.0,
        t_max: float = 21.0,
        shared: bool = False,
        learn_teacher: bool = True,
        learn_student: bool = True,
    ):
        super().__init__()
        self.shared = shared
        for who, init in (("teacher", init_teacher), ("student", init_student)):
            if 0 < t_min < t_max and not t_min < init < t_max:  # the bounds hold fixed temperatures too
                raise ConfigError(f"the {who} temperature {init:g} must lie strictly inside the bounds "
                                  f"(t_min, t_max) = ({t_min:g}, {t_max:g}); widen t_min / t_max to use it")
        self.teacher = LearnableTemperature(init_teacher, t_min, t_max)
        self.student = self.teacher if shared else LearnableTemperature(init_student, t_min, t_max)
        self.teacher.raw.requires_grad_(learn_teacher)
        if not shared:
            self.student.raw.requires_grad_(learn_student)

    def forward(self) -> Tuple[Tensor, Tensor]:
        return self.teacher(), self.student()


Batch = Tuple[Tensor, Tensor]
TeacherSource = Union[Callable[[Tensor], Tensor], Tensor]


def _unpack(batch: Batch, name: str) -> Batch:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise DataError(f"mkd_step: {name} must be an (inputs, labels) pair, got {type(batch).__name__}")
    x, y = batch
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"mkd_step: {name} must hold inputs (B, ...) and integer labels (B,) tensors")
    return x, y


def _training_loss(
    logits: Tensor,
    labels: Tensor,
    teacher_logits: Tensor,
    t_teacher: Tensor,
    t_student: Tensor,
    ce_weight: float,
    kd_weight: float,
    rank_weight: float,
    rank_kwargs: Mapping,
    kd_scale: str,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """ce_weight·CE + kd_weight·KD + rank_weight·rank, and its parts."""
    parts = {
        "ce": F.cross_entropy(logits, labels),
        "kd": kd_loss(logits, teacher_logits, t_student, t_teacher, scale=kd_scale),
    }
    total = ce_weight * parts["ce"] + kd_weight * parts["kd"]
    if rank_weight:
        parts["rank"] = rank_loss(logits, teacher_logits, **rank_kwargs)
        total = total + rank_weight * parts["rank"]
    return total, parts


def mkd_step(
    student: nn.Module,
    teacher: TeacherSource,
    train_batch: Batch,
    heldout_batch: Batch,
    temps: MetaTemperatures,
    student_optimizer: torch.optim.Optimizer,
    temp_optimizer: torch.optim.Optimizer,
    inner_lr: float,
    ce_weight: float = 0.1,
    kd_weight: float = 0.9,
    rank_weight: float = 0.0,
    rank_kwargs: Optional[Mapping] = None,
    kd_scale: str = "product",
    lookahead_ce: bool = True,
) -> Dict[str, float]:
    """One MKD iteration: meta-update the temperatures, then take the real student step.

    1. Look-ahead ``θ' = θ − inner_lr·∇θ L_train(θ; τ_t, τ_s)`` on ``train_batch`` through
       ``torch.func.functional_call`` with ``create_graph=True`` (L_train is the weighted training
       loss of step 4, or its KD (+ rank) part only when ``lookahead_ce=False``).
    2. Meta-objective: CE of θ' on ``heldout_batch``.
    3. Its gradient goes to the learnable temperatures; ``temp_optimizer.step()``.
    4. The real step: ``ce_weight·CE + kd_weight·KD [+ rank_weight·rank]`` with the new
       (detached) temperatures, ``student_optimizer.step()``.

    teacher: a callable mapping train inputs to logits (called under no_grad), or the train batch's
    precomputed teacher logits (B, C). Batches are ``(inputs, labels)``. inner_lr is η of the
    look-ahead (normally the student optimizer's learning rate).

    BatchNorm: the look-ahead passes (steps 1-2) run in the student's current mode with *copies*
    of its buffers, so normalisation uses batch statistics as in the real step, but running
    statistics and ``num_batches_tracked`` are only advanced once, by the real forward of step 4.

    Returns floats: loss, ce, kd, [rank], meta_ce (held-out CE of θ', before the temperature
    update), t_teacher, t_student (after the update).
    """
    if not (isinstance(inner_lr, (int, float)) and inner_lr > 0):
        raise ConfigError(f"mkd_step: inner_lr must be a positive number, got {inner_lr!r}")
    x_tr, y_tr = _unpack(train_batch, "train_batch")
    x_ho, y_ho = _unpack(heldout_batch, "heldout_batch")
    rank_kwargs = dict(rank_kwargs or {})
    with torch.no_grad():
        teacher_logits = teacher if isinstance(teacher, Tensor) else teacher(x_tr)
    teacher_logits = teacher_logits.detach()
    if teacher_logits.dim() != 2 or teacher_logits.shape[0] != x_tr.shape[0]:
        raise DataError(
            f"mkd_step: teacher logits must be (B, C) with B={x_tr.shape[0]}, got {tuple(teacher_logits.shape)}"
        )
    temp_params = [p for p in temps.parameters() if p.requires_grad]
    if not temp_params:
        raise ConfigError("mkd_step: temps has no learnable temperature (both frozen)")

    # 1. look-ahead with the graph kept.
    params = {n: p for n, p in student.named_parameters() if p.requires_grad}
    buffers = {n: b.clone() for n, b in student.named_buffers()}
    t_teacher, t_student = temps()
    logits = functional_call(student, {**params, **buffers}, (x_tr,))
    la_loss, _ = _training_loss(
        logits, y_tr, teacher_logits, t_teacher, t_student,
        ce_weight if lookahead_ce else 0.0, kd_weight, rank_weight, rank_kwargs, kd_scale,
    )
    grads = torch.autograd.grad(la_loss, list(params.values()), create_graph=True, allow_unused=True)
    fast = {n: p if g is None else p - inner_lr * g for (n, p), g in zip(params.items(), grads)}

    # 2-3. held-out CE of the look-ahead student -> temperatures.
    meta_ce = F.cross_entropy(functional_call(student, {**fast, **buffers}, (x_ho,)), y_ho)
    temp_grads = torch.autograd.grad(meta_ce, temp_params, allow_unused=True)
    temp_optimizer.zero_grad(set_to_none=True)
    for p, g in zip(temp_params, temp_grads):
        p.grad = torch.zeros_like(p) if g is None else g
    temp_optimizer.step()
    del grads, fast, logits, la_loss

    # 4. real student step with the updated temperatures.
    with torch.no_grad():
        t_teacher, t_student = temps()
    student_optimizer.zero_grad(set_to_none=True)
    loss, parts = _training_loss(
        student(x_tr), y_tr, teacher_logits, t_teacher, t_student,
        ce_weight, kd_weight, rank_weight, rank_kwargs, kd_scale,
    )
    loss.backward()
    student_optimizer.step()

    out = {"loss": float(loss.detach()), "meta_ce": float(meta_ce.detach())}
    out.update({name: float(v.detach()) for name, v in parts.items()})
    out["t_teacher"] = float(t_teacher.mean())
    out["t_student"] = float(t_student.mean())
    return out
