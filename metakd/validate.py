"""The small validators: integers and numbers in range, each error one line naming the key or flag; and
declared options (``Opt``), the one mechanism of learner and backbone options.

``positive_int(0, "train.val_episodes")`` raises ``ConfigError("train.val_episodes must be >= 1, got 0")``;
the ``*_arg`` variants are argparse ``type=`` functions, so argparse names the flag.

Options are declared once, with their default and check, and resolved by one function::

    OPTIONS = {"inner_lr": Opt(0.01, "positive"), "amp": Opt("off", choices=("off", "bf16")), ...}
    options = resolve("maml", OPTIONS, given)                      # a learner (MetaLearner.__init__)
    options = resolve("conv4", OPTIONS, given, kind="backbone")    # a backbone factory

A bad value is a ConfigError naming the key, the value, the owner and what is valid; an unknown key one
listing the valid keys. A plain value in ``OPTIONS`` (not an ``Opt``) is a default with no check.
"""
from __future__ import annotations

import argparse
import math
import reprlib
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import numpy as np

from .errors import ConfigError


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxlevel = 60, 60, 4, 4, 4, 2
MAX_SHOWN = 80


def short_repr(value: Any, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` cut to about ``limit`` characters, built without expanding a huge or deeply shared
    value (an error message must not grow with the input)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _prefix(name: str, source: Optional[str]) -> str:
    return f"{source}: {name}" if source else name


def integer(value: Any, name: str, source: Optional[str] = None) -> int:
    """``value`` as an int if it is a Python or NumPy integer (bools refused), else ConfigError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{_prefix(name, source)} must be an integer, got {short_repr(value)}")
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
        raise ConfigError(f"{_prefix(name, source)} must be a finite number, got {short_repr(value)}")
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


# Declared options ---------------------------------------------------------------------------------
# kind -> (test, phrase used in the error message)
_KINDS = {
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "int>=0": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "int>=1": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "positive": (lambda v: _num(v) and v > 0, "a positive number"),
    "number>=0": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "number": (lambda v: _num(v), "a number"),
    "str": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "any": (lambda v: True, ""),
}


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Opt:
    """One option: ``default``; ``kind`` (a key of _KINDS); ``choices`` (the value must be one of them);
    ``nullable`` (None is also valid); ``check`` (extra test (value) -> error phrase or None);
    ``hint`` (what the message says is valid, overriding the kind's phrase)."""

    default: Any
    kind: str = "any"
    choices: Optional[Tuple[Any, ...]] = None
    nullable: bool = False
    hint: str = ""
    check: Optional[Callable[[Any], Optional[str]]] = None

    def validate(self, owner: str, key: str, value: Any, kind: str = "learner") -> Any:
        """``value`` unchanged if valid, else a ConfigError naming the owner (``kind`` ``owner``: "learner
        'maml'", "backbone 'conv4'"), key, value and what is valid."""
        where = f"option {key}={value!r} of {kind} {owner!r}"
        if value is None and self.nullable:
            return None
        if self.choices is not None:
            if value not in self.choices:
                raise ConfigError(f"{where} must be one of {', '.join(map(str, self.choices))}")
            return value
        test, phrase = _KINDS[self.kind]
        if not test(value):
            what = self.hint or (f"null or {phrase}" if self.nullable else phrase)
            raise ConfigError(f"{where} must be {what}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigError(f"{where} {problem}")
        return value


def default_of(spec: Any) -> Any:
    return spec.default if isinstance(spec, Opt) else spec


def resolve(owner: str, declared: dict, given: dict, kind: str = "learner") -> dict:
    """Every declared option's checked value (given or default) of ``kind`` ``owner`` (a learner, a
    backbone); unknown keys are a ConfigError listing the valid ones."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for {kind} {owner!r}; "
            f"valid options: {', '.join(sorted(declared)) or '(none)'}"
        )
    out = {}
    for key, spec in declared.items():
        value = given[key] if key in given else default_of(spec)
        out[key] = spec.validate(owner, key, value, kind) if isinstance(spec, Opt) else value
    return out


def without(options: dict, *keys: str) -> dict:
    """``options`` less ``keys`` (a subclass that fixes an option removes it from its OPTIONS)."""
    return {k: v for k, v in options.items() if k not in keys}


def with_defaults(options: dict, **defaults: Any) -> dict:
    """``options`` with new defaults for some keys (their checks kept)."""
    out = dict(options)
    for k, v in defaults.items():
        spec = out[k]
        out[k] = Opt(v, spec.kind, spec.choices, spec.nullable, spec.hint, spec.check) if isinstance(spec, Opt) else v
    return out


def _threads(value: Any, name: str, source: Optional[str] = None) -> int:
    from .limits import check_threads

    return check_threads(positive_int(value, name, source), name, source)


threads_arg = _arg_type(_threads, "threads")
