"""The small validators: integers and numbers in range, each error one line naming the key or flag.

``positive_int(0, "train.val_episodes")`` raises ``ConfigError("train.val_episodes must be >= 1, got 0")``;
the ``*_arg`` variants are argparse ``type=`` functions, so argparse names the flag.
"""
from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Optional

import numpy as np

from .errors import ConfigError


def _prefix(name: str, source: Optional[str]) -> str:
    return f"{source}: {name}" if source else name


def integer(value: Any, name: str, source: Optional[str] = None) -> int:
    """``value`` as an int if it is a Python or NumPy integer (bools refused), else ConfigError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{_prefix(name, source)} must be an integer, got {value!r}")
    return int(value)


def int_at_least(value: Any, name: str, minimum: int, source: Optional[str] = None) -> int:
    """An integer >= ``minimum``, else ConfigError naming ``name``."""
    if integer(value, name, source) < minimum:
        raise ConfigError(f"{_prefix(name, source)} must be >= {minimum}, got {value!r}")
    return int(value)


def positive_int(value: Any, name: str, source: Optional[str] = None) -> int:
    """An int >= 1, else ConfigError naming ``name``."""
    return int_at_least(value, name, 1, source)


def non_negative_int(value: Any, name: str, source: Optional[str] = None) -> int:
    """An int >= 0, else ConfigError naming ``name``."""
    return int_at_least(value, name, 0, source)


def in_range(value: Any, name: str, lo: Optional[float] = None, hi: Optional[float] = None, *,
             lo_open: bool = False, hi_open: bool = False, source: Optional[str] = None) -> float:
    """A finite number within [lo, hi] (``lo_open``/``hi_open``: that bound excluded; None: unbounded)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{_prefix(name, source)} must be a finite number, got {value!r}")
    ok = (lo is None or (value > lo if lo_open else value >= lo)) and (hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        if hi is None:
            want = f"{'>' if lo_open else '>='} {lo}"
        elif lo is None:
            want = f"{'<' if hi_open else '<='} {hi}"
        else:
            want = f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ConfigError(f"{_prefix(name, source)} must be {want}, got {value!r}")
    return value


def positive_number(value: Any, name: str, source: Optional[str] = None) -> float:
    """A finite number > 0."""
    return in_range(value, name, 0, lo_open=True, source=source)


def _arg_type(check: Callable[[Any, str], int], label: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        try:
            return check(value, "the value")
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).replace("the value ", "", 1)) from None

    parse.__name__ = label
    return parse


positive_int_arg = _arg_type(positive_int, "positive_int")
non_negative_int_arg = _arg_type(non_negative_int, "non_negative_int")


def consistency_views(value: Any, name: str = "consistency_views", source: Optional[str] = None) -> int:
    """0 (off) or an int >= 2 (augmented support copies compared by the consistency metric)."""
    if integer(value, name, source) == 1 or value < 0:
        raise ConfigError(f"{_prefix(name, source)} must be 0 (off) or an integer >= 2, got {value!r}")
    return value


consistency_views_arg = _arg_type(consistency_views, "consistency_views")
