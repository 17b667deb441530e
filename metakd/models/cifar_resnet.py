"""CIFAR ResNets of the distillation literature (CRD / mdistiller names): resnet20, resnet56,
resnet8x4, resnet32x4.

Architecture (He et al. 2016, CIFAR variant): a 3x3 stem conv -> BN -> ReLU with ``widths[0]``
channels, then three stages of ``(depth - 2) / 6`` basic blocks (two 3x3 convs, identity or
1x1-conv+BN shortcut) with ``widths[1..3]`` channels and strides 1, 2, 2, global average pooling
and a linear head. resnet20/56 use widths (16, 16, 32, 64); the "x4" models (16·4 ... ) use
(32, 64, 128, 256). At 32x32 the parameter counts are 0.28M / 0.86M / 1.23M / 7.43M with 100
classes. ``features``: (B, C, H, W) -> (B, widths[3]); ``head``: Linear(widths[3], n_way); any input
size >= 8 works (adaptive average pooling).

Option ``bn``: "running" (default here: plain classification) or "transductive"; see
``metakd.models.common``. Init: Kaiming-normal convs (fan_out), BN weight 1 / bias 0, default Linear.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .common import batch_norm, init_conv_bn, register_classifier_family



class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, bn: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = batch_norm(cout, bn)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = batch_norm(cout, bn)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), batch_norm(cout, bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """x (B, C, H, W) -> logits (B, n_way); forward = head(features(x))."""

    def __init__(self, depth: int, widths: Sequence[int], n_way: int, in_channels: int = 3, bn: str = "running"):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        layers: list = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), batch_norm(widths[0], bn), nn.ReLU()]
        cin = widths[0]
        for stage, (cout, stride) in enumerate(zip(widths[1:], (1, 2, 2))):
            for b in range(blocks):
                layers.append(BasicBlock(cin, cout, stride if b == 0 else 1, bn))
                cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.feature_dim = cin
        self.head = nn.Linear(cin, n_way)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


SPECS = {
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}


register_classifier_family(SPECS, lambda spec, n, c, bn: CifarResNet(*spec, n, c, bn=bn),
                           "{name}: CIFAR ResNet, (depth, widths) = {spec}.")
