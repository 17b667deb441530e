"""VGG with BatchNorm for 32x32 inputs: vgg8, vgg13 (CRD / mdistiller names).

Five conv stages of 64, 128, 256, 512, 512 channels, each of one (vgg8) or two (vgg13) conv3x3 ->
BN -> ReLU layers; 2x2 max-pooling after the first four stages, global average pooling after the
fifth, then a linear head Linear(512, n_way). Parameters with 100 classes: vgg8 3.97M, vgg13 9.46M.
``features``: (B, C, H, W) -> (B, 512). Option ``bn``: "running" (default) or "transductive".
"""
from __future__ import annotations


import torch
from torch import nn

from .common import batch_norm, init_conv_bn, register_classifier_family

STAGE_WIDTHS = (64, 128, 256, 512, 512)


class CifarVGG(nn.Module):
    """x (B, C, H, W) -> logits (B, n_way)."""

    def __init__(self, convs_per_stage: int, n_way: int, in_channels: int = 3, bn: str = "running"):
        super().__init__()
        layers: list = []
        cin = in_channels
        for stage, width in enumerate(STAGE_WIDTHS):
            for _ in range(convs_per_stage):
                layers += [nn.Conv2d(cin, width, 3, padding=1), batch_norm(width, bn), nn.ReLU()]
                cin = width
            layers.append(nn.MaxPool2d(2) if stage < len(STAGE_WIDTHS) - 1 else nn.AdaptiveAvgPool2d(1))
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        self.feature_dim = cin
        self.head = nn.Linear(cin, n_way)
        init_conv_bn(self)
        nn.init.normal_(self.head.weight, 0, 0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


SPECS = {"vgg8": 1, "vgg13": 2}


register_classifier_family(SPECS, lambda spec, n, c, bn: CifarVGG(spec, n, c, bn=bn),
                           "{name}: VGG with BatchNorm, {spec} conv(s) per stage.")
