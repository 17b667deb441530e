"""Helpers of the learners around the classifier head: the embedding that feeds it (ProtoNet, ANIL, the
baselines) and a head built from the support set (ProtoMAML, Unicorn-MAML)."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError


def head_names(learner: str, model: nn.Module, head_name: str, adapted) -> Tuple[str, str]:
    """("<head>.weight", "<head>.bias") of a Linear head that the inner loop adapts, else a ConfigError."""
    head = getattr(model, head_name, None) if "." not in head_name else model.get_submodule(head_name)
    if not isinstance(head, nn.Linear) or head.bias is None:
        raise ConfigError(f"learner {learner!r} needs a Linear classifier with a bias at head_name={head_name!r} "
                          f"(got {type(head).__name__ if head is not None else 'nothing'}); the built-in backbones "
                          "have one as `head`")
    names = (f"{head_name}.weight", f"{head_name}.bias")
    if not all(n in adapted for n in names):
        raise ConfigError(f"learner {learner!r} initialises the head before the inner loop, so the inner loop must "
                          f"adapt {names[0]} and {names[1]}; choose adapt 'all', 'head' or prefixes including "
                          f"{head_name!r}")
    return names


def class_means(z: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """Class means (n_way, D) of z (S, D), labels (S,) in 0..n_way-1 (vmap-safe: no data-dependent checks)."""
    onehot = (labels[:, None] == torch.arange(n_way, device=labels.device)).to(z.dtype)  # (S, n_way)
    return onehot.t() @ z / onehot.sum(0).clamp_min(1)[:, None]


def encoder(model: nn.Module) -> nn.Module:
    """The embedding of ``model``: its ``features`` submodule (the built-in backbones have one), else the model."""
    features = getattr(model, "features", None)
    return features if isinstance(features, nn.Module) else model


def flat_features(model: nn.Module, x: Tensor) -> Tensor:
    """Flat embeddings (B, D) of x (B, C, H, W) by ``encoder(model)``."""
    return encoder(model)(x).flatten(1)
