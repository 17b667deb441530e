"""Wide ResNets for CIFAR (Zagoruyko & Komodakis 2016): wrn_40_2, wrn_16_2 (CRD / mdistiller names).

WRN-d-k: a 3x3 stem conv to 16 channels, three groups of ``(d - 4) / 6`` pre-activation blocks
(BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv3x3, 1x1-conv shortcut when the shape changes) with
16k, 32k, 64k channels and strides 1, 2, 2, then BN -> ReLU, global average pooling and a linear
head (no dropout). Parameters with 100 classes: wrn_40_2 2.26M, wrn_16_2 0.70M.
``features``: (B, C, H, W) -> (B, 64k); ``head``: Linear(64k, n_way).
Option ``bn``: "running" (default) or "transductive".
"""
from __future__ import annotations


import torch
from torch import nn

from .common import batch_norm, init_conv_bn, register_classifier_family



class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, bn: str):
        super().__init__()
        self.bn1 = batch_norm(cin, bn)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = batch_norm(cout, bn)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.project = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        # the projection sees the pre-activated input, the identity the raw one
        return out + (x if self.project is None else self.project(pre))


class WideResNet(nn.Module):
    """x (B, C, H, W) -> logits (B, n_way)."""

    def __init__(self, depth: int, widen: int, n_way: int, in_channels: int = 3, bn: str = "running"):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        blocks = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        layers: list = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)]
        cin = 16
        for cout, stride in zip(widths, (1, 2, 2)):
            for b in range(blocks):
                layers.append(PreActBlock(cin, cout, stride if b == 0 else 1, bn))
                cin = cout
        layers += [batch_norm(cin, bn), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.feature_dim = cin
        self.head = nn.Linear(cin, n_way)
        init_conv_bn(self)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


SPECS = {"wrn_40_2": (40, 2), "wrn_16_2": (16, 2), "wrn_16_4": (16, 4)}


register_classifier_family(SPECS, lambda spec, n, c, bn: WideResNet(*spec, n, c, bn=bn),
                           "{name}: wide ResNet, (depth, widen factor) = {spec}.")
