"""Backbones, registered by name in ``metakd.registry.BACKBONES``.

Every built-in backbone has ``features`` ((B, C, H, W) -> (B, D)) and ``head`` (Linear(D, n_way)),
with forward(x) = head(features(x)), and a BatchNorm option ``bn`` ("transductive" by default, as in
MAML; "running" for standard running statistics), see :mod:`metakd.models.common`.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import BACKBONES
from . import conv4, resnet12  # noqa: F401  (registers "conv4" and "resnet12")
from .conv4 import Conv4
from .resnet12 import ResNet12


def build_backbone(name: str, n_way: int, in_channels: int = 3, image_size: Any = 84, **options: Any) -> nn.Module:
    """The backbone registered as ``name``, built for ``n_way`` classes."""
    return BACKBONES.build(name, n_way, in_channels=in_channels, image_size=image_size, **options)


__all__ = ["BACKBONES", "Conv4", "ResNet12", "build_backbone"]
from . import cifar_resnet, cifar_vgg, cifar_wrn  # noqa: E402,F401  (registers the CIFAR classification backbones)
