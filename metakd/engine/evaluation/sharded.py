"""Evaluation split across the ranks of a torch.distributed process group (torchrun, SLURM)."""
from __future__ import annotations

from typing import Any, Dict, List

import torch

from ...data.sampler import episodes_fingerprint
from ..runs.distributed import DistContext
from ..runs.metrics import mean_ci95
from .episodes import evaluate_episodes


def evaluate_sharded(ctx: DistContext, learner: torch.nn.Module, sampler: Any, episodes: List[Any],
                     **kwargs: Any) -> Dict[str, Any]:
    """``evaluate_episodes`` over ``episodes`` split across the ranks; every rank gets the full-list result.

    Rank r evaluates the contiguous block ``ctx.block(len(episodes))``; the per-episode accuracies are
    gathered in episode order and mean, CI, fingerprint and seconds are those of the whole list.
    The augmented scenario and the consistency metric seed each episode by its index in the list
    ``evaluate_episodes`` receives, so with ``scenario`` or ``consistency_views`` every rank
    evaluates the full list (correct, not faster). kwargs: those of ``evaluate_episodes``.
    """
    if not ctx.active or kwargs.get("scenario") is not None or kwargs.get("consistency_views"):
        return evaluate_episodes(learner, sampler, episodes, **kwargs)
    if kwargs.get("progress"):
        kwargs["progress"] = ctx.is_main
    mine = episodes[ctx.block(len(episodes))]
    local: Dict[str, Any] = {"per_episode": [], "seconds": 0.0}
    if mine:
        local = evaluate_episodes(learner, sampler, mine, **kwargs)
    accs = ctx.gather_episode_values(local["per_episode"], len(episodes), "gathering per-episode accuracies")
    seconds = max(ctx.all_gather_object(float(local["seconds"]), "gathering evaluation times"))
    mean, ci = mean_ci95(accs)
    return {"acc": mean, "ci95": ci, "episodes": len(accs), "per_episode": accs,
            "fingerprint": episodes_fingerprint(episodes), "seconds": seconds, "world_size": ctx.world_size}
