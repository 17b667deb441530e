"""Argument checks shared by the on-disk dataset loaders: split names, unknown options, the root folder."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..errors import ConfigError, DataError
from ..validate import positive_int
from .cache import note

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_ALIASES: dict[str, str] = {"validation": "val", "valid": "val"}


def normalize_split(split: str, loader: str, allowed: Sequence[str] = SPLITS) -> str:
    """Return the canonical split name ("validation" -> "val"); ConfigError if not in ``allowed``."""
    name = SPLIT_ALIASES.get(str(split).lower(), str(split).lower())
    if name not in allowed:
        aliases = [a for a, c in SPLIT_ALIASES.items() if c in allowed]
        raise ConfigError(
            f"{loader}: unknown split {split!r}; valid splits: {', '.join(allowed)}"
            + (f" (aliases: {', '.join(aliases)})" if aliases else "")
        )
    return name


def reject_unknown(loader: str, unknown: Mapping[str, object], valid: Iterable[str]) -> None:
    """ConfigError naming every unexpected keyword option and the valid ones."""
    if unknown:
        raise ConfigError(
            f"{loader}: unknown option(s) {', '.join(sorted(map(repr, unknown)))}; "
            f"valid options: root, split, {', '.join(valid)}"
        )


def check_positive_int(value: object, name: str, loader: str) -> int:
    """An int >= 1 (bools refused), else ConfigError."""
    return positive_int(value, name, source=loader)


def check_choice(value: object, name: str, choices: Sequence[object], loader: str) -> object:
    if value not in choices:
        raise ConfigError(f"{loader}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def require_root(root: str | os.PathLike, loader: str) -> Path:
    """The dataset root as a Path; DataError if it does not exist or is not a folder."""
    if root is None or str(root) == "":
        raise ConfigError(f"{loader}: a dataset root folder is required")
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"{loader}: dataset root {str(path)!r} does not exist")
    if not path.is_dir():
        raise DataError(f"{loader}: dataset root {str(path)!r} is not a folder")
    return path


def first_existing(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of ``folder/name`` that exists as a file, or None."""
    for name in names:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def pick_file(folder: Path, names: Sequence[str], loader: str) -> Path | None:
    """``first_existing``, noting (``cache.note``) which file was used when several of ``names`` exist."""
    present = [folder / n for n in names if (folder / n).is_file()]
    if len(present) > 1:
        others = " and ".join(p.name for p in present[1:])
        note(f"{loader}: {str(folder)!r} holds both {present[0].name} and {others}; using {present[0].name} "
             f"(move {others} out of the folder to use {'them' if len(present) > 2 else 'it'} instead)")
    return present[0] if present else None


def layout_choice(loader: str, root: Path, present: Sequence[str], why: str = "") -> str:
    """``present[0]``, noting the choice when ``root`` holds several layouts and how to pick another."""
    if len(present) > 1:
        how = (f"data.options.layout={present[1]}" if len(present) == 2
               else f"data.options.layout=<{' or '.join(present[1:])}>")
        note(f"{loader}: {str(root)!r} holds the layouts {' and '.join(present)}; using {present[0]}{why} "
             f"(set {how} in a config, or layout= when calling the loader, to read the other)")
    return present[0]


def missing_split_error(loader: str, root: Path, split: str, looked_for: Sequence[str], what: str = "") -> DataError:
    """DataError naming every file looked for when a split is absent."""
    names = ", ".join(looked_for)
    return DataError(
        f"{loader}: no {split!r} split in {str(root)!r}{(' (' + what + ')') if what else ''}; looked for: {names}"
    )
