"""Backbones: output shapes, feature sizes, BatchNorm modes, options."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metakd.errors import ConfigError
from metakd.models import BACKBONES, build_backbone
from metakd.models.dropblock import drop_block


@pytest.mark.parametrize("size, channels", [(84, 3), (84, 1), (28, 1), (28, 3)])
@pytest.mark.parametrize("hidden", [32, 64])
def test_conv4_shapes(size, channels, hidden):
    model = build_backbone("conv4", 5, in_channels=channels, image_size=size, hidden=hidden)
    x = torch.randn(2, channels, size, size)
    spatial = {84: 5, 28: 1}[size]
    assert model.feature_dim == hidden * spatial * spatial  # 25 * hidden at 84x84
    assert model.features(x).shape == (2, model.feature_dim)
    assert model(x).shape == (2, 5)
    assert isinstance(model.head, nn.Linear) and model.head.in_features == model.feature_dim
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)


def test_conv4_default_width_is_mamls_32():
    assert build_backbone("conv4", 5).feature_dim == 800


@pytest.mark.parametrize("size, channels", [(84, 3), (28, 1)])
def test_resnet12_shapes(size, channels):
    torch.manual_seed(0)
    model = build_backbone("resnet12", 5, in_channels=channels, image_size=size)
    x = torch.randn(2, channels, size, size)
    assert model.feature_dim == 640
    assert model.features(x).shape == (2, 640)
    assert model(x).shape == (2, 5)
    widths = [b.conv3[0].out_channels for b in model.features if hasattr(b, "conv3")]
    assert widths == [64, 160, 320, 640]


def test_resnet12_options():
    model = build_backbone("resnet12", 4, in_channels=1, image_size=32, widths=[8, 8, 16, 16], avg_pool=False)
    assert model.feature_dim == 16 * 2 * 2
    assert model(torch.randn(3, 1, 32, 32)).shape == (3, 4)
    regular = build_backbone("resnet12", 4, image_size=32, widths=[4, 4, 4, 4], drop_rate=0.1, dropblock=True)
    kinds = [type(b.drop).__name__ for b in regular.features if hasattr(b, "drop")]
    assert kinds == ["Dropout", "Dropout", "DropBlock", "DropBlock"]
    plain = build_backbone("resnet12", 4, image_size=32, widths=[4, 4, 4, 4])
    assert all(isinstance(b.drop, nn.Identity) for b in plain.features if hasattr(b, "drop"))


@pytest.mark.parametrize("name", ["conv4", "resnet12"])
def test_bn_modes(name):
    small = {"widths": [4, 4, 4, 4]} if name == "resnet12" else {"hidden": 4}
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32) * 3 + 1
    trans = build_backbone(name, 5, image_size=32, **small)
    assert list(trans.buffers()) == []  # transductive: no running statistics
    # batch statistics in eval mode too: outputs equal in train and eval
    train_out = trans.train()(x)
    torch.testing.assert_close(trans.eval()(x), train_out)
    running = build_backbone(name, 5, image_size=32, bn="running", **small)
    bns = [m for m in running.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.track_running_stats for m in bns)
    running.train()(x)
    assert bns[0].num_batches_tracked.item() == 1 and bns[0].running_mean.abs().sum() > 0
    assert not torch.allclose(running.eval()(x), running.train()(x))


def test_options_are_checked():
    with pytest.raises(ConfigError, match=r"'width'.*valid options: bn, hidden"):
        build_backbone("conv4", 5, width=64)
    with pytest.raises(ConfigError, match=r"'depth'.*valid options: avg_pool, bn, drop_rate, dropblock"):
        build_backbone("resnet12", 5, depth=18)
    with pytest.raises(ConfigError, match="bn='batch'.*transductive, running"):
        build_backbone("conv4", 5, bn="batch")
    with pytest.raises(ConfigError, match="image_size >= 16"):
        build_backbone("conv4", 5, image_size=8)
    with pytest.raises(ConfigError, match="hidden"):
        build_backbone("conv4", 5, hidden=0)
    with pytest.raises(ConfigError, match="n_way"):
        build_backbone("conv4", 0)
    with pytest.raises(ConfigError, match="needs drop_rate > 0"):
        build_backbone("resnet12", 5, dropblock=True)
    with pytest.raises(ConfigError, match="widths"):
        build_backbone("resnet12", 5, widths="64")
    with pytest.raises(ConfigError, match="unknown backbone 'vgg'"):
        build_backbone("vgg", 5)
    assert {"conv4", "resnet12"} <= set(BACKBONES.names())


def test_drop_block_drops_square_blocks_at_about_the_rate():
    torch.manual_seed(0)
    x = torch.ones(64, 8, 11, 11)
    out = drop_block(x, drop_rate=0.2, block_size=3, training=True)
    dropped = (out == 0).float().mean().item()
    assert 0.1 < dropped < 0.3
    kept = out[out != 0]
    assert torch.allclose(kept, kept[0].expand_as(kept))
    torch.testing.assert_close(out.mean(), torch.tensor(1.0))  # kept units rescaled
    # every dropped unit lies in a fully dropped 3x3 square: the mask equals its morphological opening
    zero = (out == 0).float()
    whole_squares = -F.max_pool2d(-zero, 3, stride=1)  # 1 where the square with that top-left is all zero
    opened = F.max_pool2d(F.pad(whole_squares, (2, 2, 2, 2)), 3, stride=1)
    assert torch.equal(opened, zero)
    assert torch.equal(drop_block(x, 0.2, 3, training=False), x)
