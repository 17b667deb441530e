"""Evaluation on a fixed, seeded list of episodes: mean accuracy ± 95% CI over episodes."""
from __future__ import annotations

import time
from typing import Any, Dict, List

import torch
from tqdm.auto import tqdm

from ..data.sampler import EpisodeSampler, episodes_fingerprint
from .metrics import mean_ci95


def evaluate_episodes(learner: torch.nn.Module, sampler: EpisodeSampler, episodes: List[Any], *,
                      batch_size: int = 8, progress: bool = True, desc: str = "eval") -> Dict[str, Any]:
    """Run ``learner.evaluate`` over ``episodes`` (a list from ``sampler.fixed_episodes``).

    Returns acc and ci95 (fractions), per-episode accuracies, the episode-list fingerprint and seconds.
    The learner is put in eval mode (dropout off; BatchNorm as its ``bn`` mode says) and restored after.
    """
    was_training = learner.training
    learner.eval()
    accs: List[float] = []
    start = time.perf_counter()
    bar = tqdm(total=len(episodes), desc=desc, unit="ep", disable=not progress, leave=False, dynamic_ncols=True)
    try:
        for lo in range(0, len(episodes), batch_size):
            batch = sampler.batch(episodes[lo:lo + batch_size])
            accs.extend(learner.evaluate(batch).detach().float().cpu().tolist())
            bar.update(batch.num_tasks)
            mean, _ = mean_ci95(accs)
            bar.set_postfix(acc=f"{100 * mean:.2f}")
    finally:
        bar.close()
        learner.train(was_training)
    mean, ci = mean_ci95(accs)
    return {"acc": mean, "ci95": ci, "episodes": len(accs), "per_episode": accs,
            "fingerprint": episodes_fingerprint(episodes), "seconds": time.perf_counter() - start}
