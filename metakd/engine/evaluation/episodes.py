"""Evaluation on a fixed, seeded list of episodes: mean accuracy ± 95% CI over episodes."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from tqdm.auto import tqdm

from ...data.augment import AugmentStrengths, augment_images, batch_preset, episode_seed, get_preset, perturb_batch
from ...data.episode import EpisodeBatch
from ...data.sampler import EpisodeSampler, episodes_fingerprint
from ...distill.consistency import prediction_consistency
from ...limits import check_bytes, image_batch_bytes
from ...validate import consistency_views as check_views
from ...validate import positive_int
from ..runs.metrics import mean_ci95
from .feature_cache import cached_accuracies, feature_head



def check_views_memory(views: int, batch_size: int, sampler: EpisodeSampler) -> None:
    """ConfigError naming --consistency-views when its augmented support copies would not fit in memory."""
    if views:
        h, w, c = sampler.split.image_shape
        check_bytes("--consistency-views", image_batch_bytes(batch_size * views, sampler.n_way, sampler.k_shot, c, h),
                    f"{views} augmented copies of the support sets of {batch_size} episodes")

def evaluate_episodes(learner: torch.nn.Module, sampler: EpisodeSampler, episodes: List[Any], *,
                      batch_size: int = 8, progress: bool = True, desc: str = "eval",
                      consistency_views: int = 0, augment: Optional[AugmentStrengths] = None,
                      scenario: Optional[Tuple[str, str]] = None, scenario_seed: int = 0,
                      cache: bool = False, preset: Optional[str] = None) -> Dict[str, Any]:
    """Run ``learner.evaluate`` over ``episodes`` (a list from ``sampler.fixed_episodes``).

    Returns acc and ci95 (fractions), per-episode accuracies, the episode-list fingerprint and seconds.
    The learner is put in eval mode (dropout off; BatchNorm as its ``bn`` mode says) and restored after.

    scenario: (level, side), e.g. ("strong", "support"): the augmented test scenario, each episode
    perturbed by a seed derived from (scenario_seed, its index in ``episodes``) (see
    ``metakd.data.augment.perturb_batch``). consistency_views k >= 2 also measures MSD's consistency:
    per episode, the mean cosine similarity of the query predictions of the models adapted on k
    differently augmented copies of its (scenario-perturbed) support set (``augment`` strengths,
    default the preset's MSD views; the draws are seeded per episode too); adds consistency,
    consistency_ci95 and per_episode_consistency. It costs k extra adaptations per episode.
    preset: the augmentation preset of the scenario levels and consistency copies ("natural" /
    "glyph"); default the data's (the batches' ``augment_preset``). With a scenario or consistency
    views the result names it (``augment_preset``).

    cache: when the learner's backbone does not change inside an episode and its features are
    per-image (``metakd.engine.evaluation.feature_cache``), embed every image once and run all episodes on the
    cached features (same accuracies; ``cached_images`` in the result). Not with ``scenario`` or
    ``consistency_views``, whose images differ per episode; otherwise the ordinary path.
    """
    check_views(consistency_views)
    positive_int(batch_size, "batch_size")
    check_views_memory(consistency_views, batch_size, sampler)
    strengths = augment
    applied = get_preset(preset if preset is not None else getattr(sampler, "augment_preset", None)).name
    was_training = learner.training
    learner.eval()
    accs: List[float] = []
    agree: List[float] = []
    start = time.perf_counter()
    head = None
    if cache and scenario is None and not consistency_views:
        head = feature_head(learner)
    extra: Dict[str, Any] = {}
    bar = tqdm(total=len(episodes), desc=desc, unit="ep", disable=not progress, leave=False, dynamic_ncols=True)
    try:
        if head is not None:
            got = cached_accuracies(learner, sampler, episodes, head, bar.update)
            accs, extra["cached_images"] = got["per_episode"], got["images"]
        for lo in range(0, len(episodes) if head is None else 0, batch_size):
            batch = sampler.batch(episodes[lo:lo + batch_size])
            indices = list(range(lo, lo + batch.num_tasks))
            if scenario is not None:
                batch = perturb_batch(batch, indices, scenario[0], scenario[1], scenario_seed, sampler.mean, sampler.std,
                                      preset=preset)
            accs.extend(learner.evaluate(batch).detach().float().cpu().tolist())
            if consistency_views:
                agree.extend(batch_consistency(learner, batch, indices, consistency_views, strengths, scenario_seed,
                                               sampler.mean, sampler.std, preset=preset))
            bar.update(batch.num_tasks)
            mean, _ = mean_ci95(accs)
            bar.set_postfix(acc=f"{100 * mean:.2f}")
    finally:
        bar.close()
        learner.train(was_training)
    mean, ci = mean_ci95(accs)
    out = {"acc": mean, "ci95": ci, "episodes": len(accs), "per_episode": accs,
           "fingerprint": episodes_fingerprint(episodes), "seconds": time.perf_counter() - start, **extra}
    if scenario is not None or consistency_views:
        out["augment_preset"] = applied
    if consistency_views:
        out["consistency"], out["consistency_ci95"] = mean_ci95(agree)
        out["per_episode_consistency"] = agree
        out["consistency_views"] = consistency_views
    return out


def evaluate_tasks(learner: torch.nn.Module, source: Any, num_tasks: int, *, batch_size: int = 8,
                   progress: bool = True, desc: str = "eval") -> Dict[str, Any]:
    """``learner.evaluate`` on ``num_tasks`` tasks drawn from an episode source with ``sample(n)``
    returning an EpisodeBatch (e.g. a learn2learn taskset through
    ``metakd.data.learn2learn_tasks.TaskDatasetEpisodes``). Returns acc, ci95, per_episode, seconds,
    like ``evaluate_episodes``; the tasks are random draws, not metakd's fixed episodes, so pair two
    methods only on the same draws."""
    positive_int(num_tasks, "num_tasks")
    positive_int(batch_size, "batch_size")
    was_training = learner.training
    learner.eval()
    accs: List[float] = []
    start = time.perf_counter()
    bar = tqdm(total=num_tasks, desc=desc, unit="ep", disable=not progress, leave=False, dynamic_ncols=True)
    try:
        while len(accs) < num_tasks:
            batch = source.sample(min(batch_size, num_tasks - len(accs)))
            accs.extend(learner.evaluate(batch).detach().float().cpu().tolist())
            bar.update(batch.num_tasks)
    finally:
        bar.close()
        learner.train(was_training)
    mean, ci = mean_ci95(accs)
    return {"acc": mean, "ci95": ci, "episodes": len(accs), "per_episode": accs,
            "seconds": time.perf_counter() - start}


def batch_consistency(learner: torch.nn.Module, batch: EpisodeBatch, indices: List[int], views: int,
                      strengths: Optional[AugmentStrengths] = None, seed: int = 0, mean=None, std=None,
                      preset: Optional[str] = None) -> List[float]:
    """Per task: ``prediction_consistency`` of the query logits (views, Q, N) of the models adapted on
    ``views`` augmented copies of its support set, via ``learner.task_logits(training=False)`` (for a
    gradient learner that is adapt + predict; for ProtoNet, prototypes of the augmented support).
    strengths None: the MSD views of ``preset`` (default the batch's); mean/std None: the batch's."""
    if strengths is None:
        strengths = batch_preset(batch, preset).views
    if mean is None and std is None:
        mean, std = batch.mean, batch.std
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
