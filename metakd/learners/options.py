"""Learner options declared once, with their type and default, and checked by one mechanism.

    OPTIONS = {"inner_lr": Opt(0.01, "positive"), "amp": Opt("off", choices=("off", "bf16")), ...}

``MetaLearner.__init__`` resolves every declared option (given value or default) and checks it with
``Opt.check``; a bad value is a ConfigError naming the key, the value, the learner and what is valid.
A plain value in ``OPTIONS`` (not an ``Opt``) is a default with no check, for user learners.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple

from ..errors import ConfigError

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

    def validate(self, learner: str, key: str, value: Any) -> Any:
        """``value`` unchanged if valid, else a ConfigError naming the learner, key, value and what is valid."""
        if value is None and self.nullable:
            return None
        if self.choices is not None:
            if value not in self.choices:
                raise ConfigError(f"option {key}={value!r} of learner {learner!r} must be one of "
                                  f"{', '.join(map(str, self.choices))}")
            return value
        test, phrase = _KINDS[self.kind]
        if not test(value):
            what = self.hint or (f"null or {phrase}" if self.nullable else phrase)
            raise ConfigError(f"option {key}={value!r} of learner {learner!r} must be {what}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigError(f"option {key}={value!r} of learner {learner!r} {problem}")
        return value


def default_of(spec: Any) -> Any:
    return spec.default if isinstance(spec, Opt) else spec


def resolve(learner: str, declared: dict, given: dict) -> dict:
    """Every declared option's checked value (given or default); unknown keys are a ConfigError."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for learner {learner!r}; "
            f"valid options: {', '.join(sorted(declared)) or '(none)'}"
        )
    out = {}
    for key, spec in declared.items():
        value = given[key] if key in given else default_of(spec)
        out[key] = spec.validate(learner, key, value) if isinstance(spec, Opt) else value
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


__all__: Sequence[str] = ("Opt", "resolve", "without", "with_defaults", "default_of")
