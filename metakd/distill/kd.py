"""Hinton knowledge distillation: KL between temperature-softened teacher and student outputs.

Scaling. The gradient of ``KL(p_t || p_s)`` with respect to the student logits is
``(p_s - p_t) / T_s``; in the high-temperature limit ``p_s - p_t ≈ (s/T_s - t/T_t) / C``, so the raw
loss shrinks like ``1/T²`` and its relative weight against the cross-entropy would depend on the
temperature. Hinton et al. multiply by ``T²``. With separate temperatures this module multiplies by
``T_s·T_t`` by default (``scale="product"``): it equals ``T²`` when the two agree, and it makes the
student-logit gradient ``T_t·(p_s - p_t)``, i.e. the temperature-``T_t`` analogue of the CE gradient
``p_s - onehot``. ``"student"`` (``T_s²``), ``"teacher"`` (``T_t²``) and ``"none"`` are available because
the published MKD material does not say which factor it uses. Note that when temperatures are
learned, the factor is part of what is learned (it changes the effective step size of the KD term).
"""
from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, DataError
from ..registry import LOSSES

Temperature = Union[float, Tensor]

KD_SCALES = ("product", "student", "teacher", "none")
KD_REDUCTIONS = ("batchmean", "mean", "sum", "none")


def _as_temperature(value: Temperature, batch: int, name: str, like: Tensor) -> Tensor:
    """Return ``value`` as a tensor broadcastable against (B, C) logits: shape () or (B, 1)."""
    if isinstance(value, Tensor):
        if value.dim() == 0 or (value.dim() == 1 and value.numel() == 1):
            return value.reshape(())
        if value.dim() == 1 and value.shape[0] == batch:
            return value.reshape(batch, 1)
        if value.dim() == 2 and value.shape == (batch, 1):
            return value
        raise DataError(
            f"{name}: expected a scalar, (B,) or (B, 1) temperature tensor with B={batch}, got shape {tuple(value.shape)}"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}: expected a positive number or a tensor, got {type(value).__name__}")
    if not value > 0:
        raise ConfigError(f"{name}: temperature must be > 0, got {value}")
    return torch.tensor(float(value), dtype=like.dtype, device=like.device)


def _check_logits(student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.dim() != 2 or teacher_logits.dim() != 2:
        raise DataError(
            "kd_loss: expected (B, C) student and teacher logits, got shapes "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if student_logits.shape != teacher_logits.shape:
        raise DataError(
            f"kd_loss: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape"
        )


@LOSSES.register("kd")
def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    t_student: Temperature = 4.0,
    t_teacher: Temperature | None = None,
    reduction: str = "batchmean",
    scale: str = "product",
) -> Tensor:
    """Distillation loss ``scale(T_s, T_t) · KL(softmax(t / T_t) || softmax(s / T_s))``.

    student_logits, teacher_logits: (B, C). The teacher is used as given (detach it yourself if it
    must not receive gradient). t_student, t_teacher: positive floats or tensors of shape (), (B,) or
    (B, 1) (learnable temperatures receive gradient); ``t_teacher=None`` uses ``t_student``.
    reduction: "batchmean"/"mean" = sum over classes, mean over the batch (NOT torch's element-wise
    mean); "sum"; "none" returns (B,). scale: "product" (T_s·T_t, default), "student" (T_s²),
    "teacher" (T_t²) or "none"; see the module docstring.
    """
    _check_logits(student_logits, teacher_logits)
    if reduction not in KD_REDUCTIONS:
        raise ConfigError(f"kd_loss: reduction must be one of {KD_REDUCTIONS}, got {reduction!r}")
    if scale not in KD_SCALES:
        raise ConfigError(f"kd_loss: scale must be one of {KD_SCALES}, got {scale!r}")
    batch = student_logits.shape[0]
    ts = _as_temperature(t_student, batch, "t_student", student_logits)
    tt = ts if t_teacher is None else _as_temperature(t_teacher, batch, "t_teacher", student_logits)

    log_ps = F.log_softmax(student_logits / ts, dim=-1)
    log_pt = F.log_softmax(teacher_logits / tt, dim=-1)
    per_sample = (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1)  # (B,)

    factor = {"product": ts * tt, "student": ts * ts, "teacher": tt * tt}.get(scale)
    if factor is not None:
        per_sample = per_sample * factor.reshape(-1) if factor.dim() else per_sample * factor
    if reduction in ("batchmean", "mean"):
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample
