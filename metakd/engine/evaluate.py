"""Evaluation on a fixed, seeded list of episodes: mean accuracy ± 95% CI over episodes."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from tqdm.auto import tqdm

from ..data.augment import AugmentStrengths, augment_images, episode_seed, perturb_batch
from ..data.episode import EpisodeBatch
from ..data.sampler import EpisodeSampler, episodes_fingerprint
from ..distill.consistency import prediction_consistency
from ..validate import consistency_views as check_views, positive_int
from .metrics import mean_ci95


def evaluate_episodes(learner: torch.nn.Module, sampler: EpisodeSampler, episodes: List[Any], *,
                      batch_size: int = 8, progress: bool = True, desc: str = "eval",
                      consistency_views: int = 0, augment: Optional[AugmentStrengths] = None,
                      scenario: Optional[Tuple[str, str]] = None, scenario_seed: int = 0) -> Dict[str, Any]:
    """Run ``learner.evaluate`` over ``episodes`` (a list from ``sampler.fixed_episodes``).

    Returns acc and ci95 (fractions), per-episode accuracies, the episode-list fingerprint and seconds.
    The learner is put in eval mode (dropout off; BatchNorm as its ``bn`` mode says) and restored after.

    scenario: (level, side), e.g. ("strong", "support"): the augmented test scenario, each episode
    perturbed by a seed derived from (scenario_seed, its index in ``episodes``) (see
    ``metakd.data.augment.perturb_batch``). consistency_views k >= 2 also measures MSD's consistency:
    per episode, the mean cosine similarity of the query predictions of the models adapted on k
    differently augmented copies of its (scenario-perturbed) support set (``augment`` strengths,
    default AugmentStrengths(); the draws are seeded per episode too); adds consistency,
    consistency_ci95 and per_episode_consistency. It costs k extra adaptations per episode.
    """
    check_views(consistency_views)
    positive_int(batch_size, "batch_size")
    strengths = augment or AugmentStrengths()
    was_training = learner.training
    learner.eval()
    accs: List[float] = []
    agree: List[float] = []
    start = time.perf_counter()
    bar = tqdm(total=len(episodes), desc=desc, unit="ep", disable=not progress, leave=False, dynamic_ncols=True)
    try:
        for lo in range(0, len(episodes), batch_size):
            batch = sampler.batch(episodes[lo:lo + batch_size])
            indices = list(range(lo, lo + batch.num_tasks))
            if scenario is not None:
                batch = perturb_batch(batch, indices, scenario[0], scenario[1], scenario_seed, sampler.mean, sampler.std)
            accs.extend(learner.evaluate(batch).detach().float().cpu().tolist())
            if consistency_views:
                agree.extend(batch_consistency(learner, batch, indices, consistency_views, strengths, scenario_seed,
                                               sampler.mean, sampler.std))
            bar.update(batch.num_tasks)
            mean, _ = mean_ci95(accs)
            bar.set_postfix(acc=f"{100 * mean:.2f}")
    finally:
        bar.close()
        learner.train(was_training)
    mean, ci = mean_ci95(accs)
    out = {"acc": mean, "ci95": ci, "episodes": len(accs), "per_episode": accs,
           "fingerprint": episodes_fingerprint(episodes), "seconds": time.perf_counter() - start}
    if consistency_views:
        out["consistency"], out["consistency_ci95"] = mean_ci95(agree)
        out["per_episode_consistency"] = agree
        out["consistency_views"] = consistency_views
    return out


def batch_consistency(learner: torch.nn.Module, batch: EpisodeBatch, indices: List[int], views: int,
                      strengths: AugmentStrengths, seed: int = 0, mean=None, std=None) -> List[float]:
    """Per task: ``prediction_consistency`` of the query logits (views, Q, N) of the models adapted on
    ``views`` augmented copies of its support set, via ``learner.task_logits(training=False)`` (for a
    gradient learner that is adapt + predict; for ProtoNet, prototypes of the augmented support)."""
    out: List[float] = []
    was_training = learner.training
    learner.eval()
    try:
        with torch.no_grad():
            for t, index in enumerate(indices):
                copies = augment_images(batch.support_x[t].unsqueeze(0).expand(views, *batch.support_x.shape[1:]),
                                        strengths, episode_seed(seed, index, "consistency"), mean, std)
                v = torch.stack([learner.task_logits(c, batch.support_y[t], batch.query_x[t], batch.n_way, False)
                                 for c in copies])
                out.append(float(prediction_consistency(v)))
    finally:
        learner.train(was_training)
    return out
