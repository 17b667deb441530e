"""Pieces every built-in backbone shares: the BatchNorm-mode option, BatchNorm modes, image sizes. Options are
declared with ``metakd.validate.Opt`` and resolved by ``metakd.validate.resolve`` (as learner options are).

BatchNorm mode (option ``bn`` of every built-in backbone):

- ``"transductive"`` (default): as in the original MAML, BatchNorm always normalises with the
  statistics of the batch it is given (support and query alike, at training and test time) and
  keeps no running statistics (``BatchNorm2d(track_running_stats=False)``, so the module has no
  buffers). Published MAML-family numbers assume this mode.
- ``"running"``: standard BatchNorm: batch statistics in ``train()`` mode, which also update the
  running mean/variance buffers; running statistics in ``eval()`` mode.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

from torch import nn

from .. import validate
from ..errors import ConfigError
from ..registry import BACKBONES
from ..validate import Opt

BN_MODES = ("transductive", "running")


def bn_option(default: str) -> Opt:
    """The ``bn`` option of a backbone (see the module docstring), with its default."""
    return Opt(default, choices=BN_MODES)


def batch_norm(channels: int, mode: str) -> nn.BatchNorm2d:
    """A BatchNorm2d for ``mode`` ("transductive" or "running"; see the module docstring)."""
    if mode == "transductive":
        return nn.BatchNorm2d(channels, track_running_stats=False)
    if mode == "running":
        return nn.BatchNorm2d(channels)
    raise ConfigError(f"option bn={mode!r} is not a BatchNorm mode; expected one of {', '.join(BN_MODES)}")


def positive_int(kind: str, key: str, value: Any) -> int:
    """``value`` as an int >= 1, or ConfigError naming ``key`` and the backbone (``metakd.validate``)."""
    return validate.positive_int(value, f"option {key}", source=kind)


def image_hw(kind: str, image_size: Any) -> Tuple[int, int]:
    """``image_size`` (an int or an (H, W) pair) as (H, W)."""
    if isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        return positive_int(kind, "image_size", image_size[0]), positive_int(kind, "image_size", image_size[1])
    size = positive_int(kind, "image_size", image_size)
    return size, size


def pooled(size: int, times: int) -> int:
    """Spatial size after ``times`` 2x2 max-pools of stride 2 (floor division each time)."""
    for _ in range(times):
        size //= 2
    return size


def head_dims(kind: str, n_way: Any, in_channels: Any) -> Dict[str, int]:
    """Validated ``n_way`` and ``in_channels``."""
    return {"n_way": positive_int(kind, "n_way", n_way), "in_channels": positive_int(kind, "in_channels", in_channels)}


def register_classifier_family(specs: Mapping[str, Any], make: Callable[..., nn.Module], doc: str) -> None:
    """Register one CIFAR-style classifier per entry of ``specs`` (name -> architecture spec).

    Each gets the backbone factory signature ``build(n_way, in_channels=3, image_size=32, bn="running")``
    and calls ``make(spec, n_way, in_channels, bn)``; ``doc`` is formatted with ``name`` and ``spec``.
    The CIFAR models pool globally, so ``image_size`` only has to be large enough for their strides.
    """
    declared = {"bn": bn_option("running")}
    for name, spec in specs.items():
        def build(n_way: int, in_channels: int = 3, image_size: Any = 32, *, _name: str = name, _spec: Any = spec,
                  **options: Any) -> nn.Module:
            o = validate.resolve(_name, declared, options, kind="backbone")
            dims = head_dims(f"backbone {_name!r}", n_way, in_channels)
            model = make(_spec, dims["n_way"], dims["in_channels"], o["bn"])
            model.input_shape = (dims["in_channels"], None, None)  # global pooling: any image size
            return model

        build.__doc__ = doc.format(name=name, spec=spec) + " Option: bn (default 'running')."
        BACKBONES.register(name)(build)


def check_input_shape(model: nn.Module, image_shape: Sequence[int], where: str = "the data") -> None:
    """ConfigError unless images of ``image_shape`` (C, H, W) fit ``model.input_shape`` (C, H, W; None:
    any size), naming both, so a mismatch is not torch's "mat1 and mat2 shapes cannot be multiplied".
    A model without ``input_shape`` (a user's backbone) is not checked."""
    want = getattr(model, "input_shape", None)
    if want is None:
        return
    c, h, w = (int(v) for v in image_shape)
    bad_c = want[0] != c
    bad_hw = want[1] is not None and (want[1], want[2]) != (h, w)
    if bad_c or bad_hw:
        built = f"in_channels={want[0]}" + ("" if want[1] is None else f", image_size={want[1]}x{want[2]}")
        raise ConfigError(
            f"{type(model).__name__} was built for {built}, but {where} has images of {c} channel(s) at {h}x{w}: "
            f"build the backbone with in_channels={c}, image_size={h if h == w else (h, w)} (in a config these "
            f"come from the data: data.image_size and the dataset's channels, e.g. data.options.channels)")


def init_conv_bn(model: nn.Module) -> None:
    """The usual CIFAR-classifier initialisation: Kaiming-normal (fan-out, ReLU) conv weights, zero conv
    biases, BatchNorm weight 1 and bias 0. Linear layers are left to the caller."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
