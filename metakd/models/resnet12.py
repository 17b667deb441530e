"""ResNet-12 as used by MetaOptNet and learn2learn: four residual blocks, widths (64, 160, 320, 640).

Each block: three conv3x3 -> BatchNorm -> LeakyReLU(0.1), the last activation applied after adding a
1x1 conv + BatchNorm shortcut; then maxpool 2x2. ``features`` ends with a global average pool
(option ``avg_pool``, default True: a 640-d embedding) or a flatten (640 * (H // 16) * (W // 16)).
``head`` is Linear(D, n_way).

Regularisation, both off by default (MetaOptNet trains with 0.1): ``drop_rate`` is the dropout
probability after every block; with ``dropblock=True`` the last two blocks use DropBlock of size
``dropblock_size`` (default 5) at that rate instead of dropout (fixed rate, no warm-up schedule).
Initialisation: conv weights Kaiming-normal (fan_out, leaky_relu 0.1); BatchNorm weight 1, bias 0;
head weight Xavier-uniform, bias zero.
BatchNorm mode: option ``bn``, "transductive" (default) or "running"; see ``metakd.models.common``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import BACKBONES
from ..validate import Opt, resolve
from .common import batch_norm, bn_option, head_dims, image_hw, pooled
from .dropblock import DropBlock


def _widths_problem(widths: Any) -> Optional[str]:
    if (isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in widths)):
        return "must be a non-empty list of positive integers"
    return None


OPTIONS = {
    "widths": Opt((64, 160, 320, 640), check=_widths_problem),
    "avg_pool": Opt(True, "bool"),
    "bn": bn_option("transductive"),
    "drop_rate": Opt(0.0, "number", hint="a number in [0, 1)",
                     check=lambda v: None if 0.0 <= v < 1.0 else "must be a number in [0, 1)"),
    "dropblock": Opt(False, "bool"),
    "dropblock_size": Opt(5, "int>=1"),
}


def _conv_bn(cin: int, cout: int, bn: str) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), batch_norm(cout, bn))


class ResidualBlock(nn.Module):
    """x (B, cin, H, W) -> (B, cout, H // 2, W // 2)."""

    def __init__(self, cin: int, cout: int, bn: str, drop: nn.Module):
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, bn)
        self.conv2 = _conv_bn(cout, cout, bn)
        self.conv3 = _conv_bn(cout, cout, bn)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), batch_norm(cout, bn))
        self.pool = nn.MaxPool2d(2)
        self.drop = drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), 0.1)
        out = F.leaky_relu(self.conv2(out), 0.1)
        out = F.leaky_relu(self.conv3(out) + self.shortcut(x), 0.1)
        return self.drop(self.pool(out))


class ResNet12(nn.Module):
    """forward(x) = head(features(x)), x (B, C, H, W) -> (B, n_way)."""

    def __init__(self, n_way: int, in_channels: int = 3, image_size: Any = 84,
                 widths: Sequence[int] = (64, 160, 320, 640), avg_pool: bool = True, bn: str = "transductive",
                 drop_rate: float = 0.0, dropblock: bool = False, dropblock_size: int = 5):
        super().__init__()
        height, width = image_hw("resnet12", image_size)
        self.input_shape = (in_channels, height, width)  # checked against the data (check_input_shape)
        h, w = pooled(height, len(widths)), pooled(width, len(widths))
        if h < 1 or w < 1:
            raise ConfigError(f"resnet12 with {len(widths)} blocks needs image_size >= {2 ** len(widths)}; "
                              f"got {height}x{width}")
        blocks = []
        cin = in_channels
        for i, cout in enumerate(widths):
            late = i >= len(widths) - 2
            if dropblock and late:
                drop: nn.Module = DropBlock(drop_rate, dropblock_size)
            else:
                drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
            blocks.append(ResidualBlock(cin, cout, bn, drop))
            cin = cout
        pool = [nn.AdaptiveAvgPool2d(1), nn.Flatten()] if avg_pool else [nn.Flatten()]
        self.features = nn.Sequential(*blocks, *pool)
        self.feature_dim = cin if avg_pool else cin * h * w
        self.head = nn.Linear(self.feature_dim, n_way)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.1, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@BACKBONES.register("resnet12")
def build(n_way: int, in_channels: int = 3, image_size: Any = 84, **options: Any) -> ResNet12:
    """ResNet-12 for ``n_way`` classes. Options: widths (default (64, 160, 320, 640)), avg_pool (True),
    bn ("transductive" | "running"), drop_rate (0.0), dropblock (False), dropblock_size (5)."""
    kind = "backbone 'resnet12'"
    o = resolve("resnet12", OPTIONS, options, kind="backbone")
    dims = head_dims(kind, n_way, in_channels)
    if o["dropblock"] and o["drop_rate"] == 0.0:
        raise ConfigError(f"option dropblock=true of {kind} needs drop_rate > 0 (the DropBlock rate)")
    return ResNet12(dims["n_way"], dims["in_channels"], image_size, widths=tuple(int(c) for c in o["widths"]),
                    avg_pool=o["avg_pool"], bn=o["bn"], drop_rate=float(o["drop_rate"]), dropblock=o["dropblock"],
                    dropblock_size=o["dropblock_size"])
