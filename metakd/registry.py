"""Registries by name, so configs select parts by string and users register their own.

    from metakd.registry import BACKBONES
    @BACKBONES.register("my_net")
    def my_net(n_way, in_channels, **kw): ...
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from .errors import ConfigError


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


class Registry:
    """A name -> factory mapping for one kind of part (learner, backbone, dataset, loss)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, Callable[..., Any]] = {}

    def register(self, name: Optional[str] = None, obj: Optional[Callable[..., Any]] = None):
        """Register ``obj`` under ``name`` (or its ``__name__``); usable as a decorator. Registering
        another object under a taken name is an error, except a redefinition of the same qualified
        name (re-running a notebook cell), which replaces it."""

        def add(o: Callable[..., Any]) -> Callable[..., Any]:
            key = (name or o.__name__).lower()
            old = self._items.get(key)
            if old is not None and old is not o and _qualname(old) != _qualname(o):
                raise ConfigError(f"{self.kind} {key!r} is already registered (by {_qualname(old)})")
            self._items[key] = o
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> Callable[..., Any]:
        key = str(name).lower()
        if key not in self._items:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; registered {self.kind}s: {', '.join(self.names()) or '(none)'}"
            )
        return self._items[key]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)

    def names(self) -> List[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return str(name).lower() in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


LEARNERS = Registry("learner")
BACKBONES = Registry("backbone")
DATASETS = Registry("dataset")
LOSSES = Registry("loss")
