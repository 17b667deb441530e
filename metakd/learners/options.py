"""Learner options: ``Opt`` and ``resolve`` live in :mod:`metakd.validate` (one mechanism for learner and
backbone options); this module keeps the import path of user learners working.

    OPTIONS = {"inner_lr": Opt(0.01, "positive"), "amp": Opt("off", choices=("off", "bf16")), ...}
"""
from __future__ import annotations

from ..validate import Opt, default_of, resolve, with_defaults, without

__all__ = ("Opt", "resolve", "without", "with_defaults", "default_of")
