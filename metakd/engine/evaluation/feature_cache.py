"""Evaluation that reuses features: for learners whose backbone does not change inside an episode
(protonet, anil, linear_probe, cosine_classifier), every image of the evaluation episodes is embedded
once, and all episodes run on the cached features.

It applies when the backbone's features of an image do not depend on the other images of its batch:
in eval mode with no transductive BatchNorm (``bn: running``, the pre-training default; with
``bn: transductive`` each support and query set is normalised by its own statistics, so features are
per-episode and evaluation stays uncached) and without autocast. ``feature_head(learner)`` says
whether a learner qualifies and gives its episode computation on features; the accuracies equal those
of the uncached evaluation on the same episodes (``tests/test_pretrain.py``).

A learner of your own qualifies by defining ``embed(x) -> (B, D)`` and
``features_logits(support_f, support_y, query_f, n_way) -> (Q, n_way)`` and setting
``FIXED_BACKBONE = True``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

FeatureHead = Callable[[Tensor, Tensor, Tensor, int], Tensor]


def batch_independent(model: nn.Module) -> bool:
    """Whether ``model`` in eval mode maps each image independently of its batch (no BatchNorm that
    normalises with batch statistics in eval mode)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats:
            return False
    return True


def _flat_features(model: nn.Module) -> Callable[[Tensor], Tensor]:
    encoder = model.features if isinstance(getattr(model, "features", None), nn.Module) else model
    return lambda x: encoder(x).flatten(1)


def _anil_head(learner: Any) -> Optional[FeatureHead]:
    """ANIL's test-time inner loop on features: ``test_steps`` SGD steps of the head on the support
    cross-entropy, ``p - inner_lr * g`` (as ``metakd.learners.inner_loop``), then the query logits."""
    head = getattr(learner.model, "head", None)
    if not isinstance(head, nn.Linear) or sorted(learner.adapted_names()) != ["head.bias", "head.weight"]:
        return None
    if getattr(learner, "amp", "off") != "off":
        return None
    steps, lr = int(learner.test_steps), learner.inner_lr("head.weight")
    if not isinstance(lr, float) or learner.inner_lr("head.bias") != lr:
        return None

    def run(sf: Tensor, sy: Tensor, qf: Tensor, n_way: int) -> Tensor:
        w, b = head.weight, head.bias
        with torch.enable_grad():
            for _ in range(steps):
                if not w.requires_grad:
                    w, b = w.detach().requires_grad_(), b.detach().requires_grad_()
                loss = F.cross_entropy(F.linear(sf, w, b), sy)
                gw, gb = torch.autograd.grad(loss, [w, b])
                w, b = (w - lr * gw).detach(), (b - lr * gb).detach()
        return F.linear(qf, w, b)

    return run


def feature_head(learner: Any) -> Optional[tuple]:
    """(embed, episode computation on features) when ``learner`` can be evaluated on cached features,
    else None (see the module docstring)."""
    from ...learners.anil import ANIL
    from ...learners.protonet import ProtoNet, prototypes, squared_distances

    model = getattr(learner, "model", None)
    if not isinstance(model, nn.Module) or not batch_independent(model):
        return None
    if type(learner) is ProtoNet:
        return _flat_features(model), lambda sf, sy, qf, n: -squared_distances(qf, prototypes(sf, sy, n))
    if type(learner) is ANIL:
        run = _anil_head(learner)
        return None if run is None else (_flat_features(model), run)
    if getattr(learner, "FIXED_BACKBONE", False) and hasattr(learner, "features_logits"):
        return learner.embed, learner.features_logits
    return None


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
