"""Distillation losses and modules: plain functions of tensors, registered in ``metakd.registry.LOSSES``.

- ``kd_loss``: Hinton KD with separate (optionally learnable) teacher/student temperatures.
- ``rank_loss`` / ``kendall_tau``: Kendall's τ ranking loss (RKKD), memory-bounded in chunks.
- ``LearnableTemperature``, ``MetaTemperatures``, ``mkd_step``: Meta Knowledge Distillation.
- ``cosine_consistency``, ``kl_consistency``, ``rank_consistency``, ``prediction_consistency``:
  Meta Self-Distillation consistency across augmented views.
"""
from .consistency import cosine_consistency, kl_consistency, prediction_consistency, rank_consistency
from .kd import kd_loss
from .rank import (
    DEFAULT_MEMORY_BUDGET,
    kendall_tau,
    pairwise_tau,
    pairwise_tau_reference,
    plan_chunks,
    rank_loss,
    subset_indices,
)
from .temperature import LearnableTemperature, MetaTemperatures, mkd_step

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "LearnableTemperature",
    "MetaTemperatures",
    "cosine_consistency",
    "kd_loss",
    "kendall_tau",
    "kl_consistency",
    "mkd_step",
    "pairwise_tau",
    "pairwise_tau_reference",
    "plan_chunks",
    "prediction_consistency",
    "rank_consistency",
    "rank_loss",
    "subset_indices",
]
