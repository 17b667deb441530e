"""DropBlock (Ghiasi et al. 2018): drop contiguous square regions of a feature map, a regulariser for convnets."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def drop_block(x: torch.Tensor, drop_rate: float, block_size: int, training: bool) -> torch.Tensor:
    """Zero random ``block_size`` x ``block_size`` squares of x (B, C, H, W) so that about ``drop_rate``
    of the units are dropped, and rescale the kept ones; identity unless ``training``."""
    if not training or drop_rate <= 0.0:
        return x
    _, _, h, w = x.shape
    size = max(1, min(block_size, h, w))
    # Seed rate such that blocks cover drop_rate of the map (seeds only where a whole block fits).
    gamma = drop_rate / size**2 * (h * w) / ((h - size + 1) * (w - size + 1))
    seeds = torch.bernoulli(torch.full((x.shape[0], x.shape[1], h - size + 1, w - size + 1),
                                       min(gamma, 1.0), device=x.device, dtype=x.dtype))
    # A seed at (i, j) drops the block with top-left corner (i, j).
    blocks = F.max_pool2d(F.pad(seeds, (size - 1,) * 4), kernel_size=size, stride=1)
    keep = 1.0 - blocks
    return x * keep * (keep.numel() / keep.sum().clamp_min(1.0))


class DropBlock(nn.Module):
    """Module form of :func:`drop_block`; active only in ``train()`` mode."""

    def __init__(self, drop_rate: float, block_size: int):
        super().__init__()
        self.drop_rate = drop_rate
        self.block_size = block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_block(x, self.drop_rate, self.block_size, self.training)

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}, block_size={self.block_size}"
