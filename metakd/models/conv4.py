"""Conv4: the four-block CNN of MAML and ProtoNet (option ``hidden``: 32 as in MAML, 64 as in ProtoNet).

Each block is conv3x3 (padding 1) -> BatchNorm -> ReLU -> maxpool 2x2. An input of H x W gives
``hidden * (H // 16) * (W // 16)`` features (floor at every pool): 25 * hidden at 84 x 84,
hidden at 28 x 28. ``features`` maps (B, C, H, W) -> (B, D); ``head`` is Linear(D, n_way).

Initialisation (as in MAML's TensorFlow code for the convolutions): conv weights Xavier-uniform, conv
biases zero; BatchNorm weight 1, bias 0; head weight Xavier-uniform, bias zero.
BatchNorm mode: option ``bn``, "transductive" (default) or "running"; see ``metakd.models.common``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import BACKBONES
from ..validate import Opt, resolve
from .common import batch_norm, bn_option, head_dims, image_hw, pooled

OPTIONS = {"hidden": Opt(32, "int>=1"), "bn": bn_option("transductive")}


class Conv4(nn.Module):
    """Four conv blocks then a linear head; forward(x) = head(features(x)), x (B, C, H, W) -> (B, n_way)."""

    def __init__(self, n_way: int, in_channels: int = 3, image_size: Any = 84, hidden: int = 32,
                 bn: str = "transductive"):
        super().__init__()
        height, width = image_hw("conv4", image_size)
        self.input_shape = (in_channels, height, width)  # checked against the data (check_input_shape)
        h, w = pooled(height, 4), pooled(width, 4)
        if h < 1 or w < 1:
            raise ConfigError(f"conv4 needs image_size >= 16 (four 2x2 pools); got {height}x{width}")
        layers = []
        channels = in_channels
        for _ in range(4):
            layers += [nn.Conv2d(channels, hidden, 3, padding=1), batch_norm(hidden, bn), nn.ReLU(),
                       nn.MaxPool2d(2)]
            channels = hidden
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        self.feature_dim = hidden * h * w
        self.head = nn.Linear(self.feature_dim, n_way)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@BACKBONES.register("conv4")
def build(n_way: int, in_channels: int = 3, image_size: Any = 84, **options: Any) -> Conv4:
    """Conv4 for ``n_way`` classes. Options: hidden (int, default 32), bn ("transductive" | "running")."""
    o = resolve("conv4", OPTIONS, options, kind="backbone")
    dims = head_dims("backbone 'conv4'", n_way, in_channels)
    return Conv4(dims["n_way"], dims["in_channels"], image_size, hidden=o["hidden"], bn=o["bn"])
