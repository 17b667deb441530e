"""Evaluation that reuses features: for learners whose backbone does not change inside an episode
(protonet, anil, linear_probe, cosine_classifier), every image of the evaluation episodes is embedded
once, and all episodes run on the cached features.

It applies when the backbone's features of an image do not depend on the other images of its batch:
in eval mode with no transductive BatchNorm (``bn: running``, the pre-training default; with
``bn: transductive`` each support and query set is normalised by its own statistics, so features are
per-episode and evaluation stays uncached) and without autocast. ``feature_head(learner)`` says
whether a learner qualifies; the learner's ``feature_head()`` hook (``metakd.learners.base.MetaLearner``)
gives its episode computation on features, so this module knows no learner classes. The accuracies
equal those of the uncached evaluation on the same episodes (``tests/test_pretrain.py``).

A learner of your own qualifies by overriding ``feature_head()`` to return ``(embed, logits)``:
``embed(x) -> (B, D)`` and ``logits(support_f, support_y, query_f, n_way) -> (Q, n_way)``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn


def batch_independent(model: nn.Module) -> bool:
    """Whether ``model`` in eval mode maps each image independently of its batch (no BatchNorm that
    normalises with batch statistics in eval mode)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats:
            return False
    return True


def feature_head(learner: Any) -> Optional[tuple]:
    """(embed, episode computation on features) when ``learner`` can be evaluated on cached features: its
    model maps each image independently of its batch and the learner's own ``feature_head()`` hook gives
    them; else None (see the module docstring)."""
    model = getattr(learner, "model", None)
    hook = getattr(learner, "feature_head", None)
    if not isinstance(model, nn.Module) or not batch_independent(model) or not callable(hook):
        return None
    return hook()


@torch.no_grad()
def embed_rows(embed: Callable[[Tensor], Tensor], sampler: Any, rows: np.ndarray,
               batch_size: Optional[int] = None) -> Tensor:
    """Features (len(rows), D) of the split's images ``rows``, converted as the sampler converts them.
    batch_size: default 16 on a CPU (per-image time measured lowest there: larger batches leave the
    cache), 512 on a GPU."""
    if batch_size is None:
        batch_size = 512 if torch.device(sampler.device).type == "cuda" else 16
    images = sampler.split.images
    out: List[Tensor] = []
    for lo in range(0, len(rows), batch_size):
        x = torch.from_numpy(np.asarray(images[rows[lo:lo + batch_size]]))
        out.append(embed(sampler.converter(x.to(sampler.device))))
    return torch.cat(out)


def cached_accuracies(learner: nn.Module, sampler: Any, episodes: Sequence[Any], head: tuple,
                      progress_update: Optional[Callable[[int], None]] = None) -> Dict[str, Any]:
    """Per-episode query accuracies of ``learner`` on ``episodes`` from features computed once per image;
    the learner is in eval mode for the whole call (the caller restores its mode)."""
    embed, logits_fn = head
    learner.eval()
    rows = np.unique(np.concatenate([np.concatenate([e.support.ravel(), e.query.ravel()]) for e in episodes]))
    feats = embed_rows(embed, sampler, rows)
    where = {int(r): i for i, r in enumerate(rows)}
    accs: List[float] = []
    with torch.no_grad():
        for e in episodes:
            n, k, q = e.support.shape[0], e.support.shape[1], e.query.shape[1]
            s_idx = torch.tensor([where[int(r)] for r in e.support.ravel()], device=feats.device)
            q_idx = torch.tensor([where[int(r)] for r in e.query.ravel()], device=feats.device)
            labels = torch.arange(n, device=feats.device)
            logits = logits_fn(feats[s_idx], labels.repeat_interleave(k), feats[q_idx], n)
            accs.append(float((logits.argmax(-1) == labels.repeat_interleave(q)).float().mean()))
            if progress_update is not None:
                progress_update(1)
    return {"per_episode": accs, "images": len(rows)}
