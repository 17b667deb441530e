"""Small Omniglot-layout zips and trees for the tests (official names, tiny random black-on-white PNGs)."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from PIL import Image

# set -> alphabets (real names, so the default validation rules apply); CHARS characters x DRAWERS drawers each
SETS: Dict[str, Sequence[str]] = {
    "images_background_small1": ("Balinese", "Early_Aramaic", "Greek", "Korean"),
    "images_background_small2": ("Greek", "Japanese_(katakana)", "Sanskrit", "Tagalog"),
    "images_background": ("Armenian", "Balinese", "Bengali", "Early_Aramaic", "Greek", "Hebrew", "Japanese_(katakana)",
                          "Korean", "Mkhedruli_(Georgian)", "Sanskrit", "Tagalog"),
    "images_evaluation": ("Angelic", "Kannada"),
}
CHARS, DRAWERS, SIZE = 2, 3, 105


def png(rng: np.random.Generator, size: int = SIZE) -> bytes:
    """A 1-bit PNG: white background with a few black strokes (rectangles)."""
    img = np.ones((size, size), bool)
    for _ in range(3):
        r, c = rng.integers(0, size - 20, 2)
        img[r:r + int(rng.integers(3, 20)), c:c + int(rng.integers(3, 20))] = False
    buf = io.BytesIO()
    Image.fromarray(img).convert("1").save(buf, format="PNG")
    return buf.getvalue()


def set_members(name: str, alphabets: Sequence[str], seed: int = 0) -> Dict[str, bytes]:
    """{"<set>/<alphabet>/<characterNN>/<id>_<drawer>.png": bytes}; a character's bytes depend only on its
    alphabet and number, so a minimal set and the full set hold the same files (as the official ones)."""
    out = {}
    for alphabet in alphabets:
        for c in range(1, CHARS + 1):
            rng = np.random.default_rng([seed, sum(map(ord, alphabet)), c])
            for d in range(1, DRAWERS + 1):
                out[f"{name}/{alphabet}/character{c:02d}/{c:04d}_{d:02d}.png"] = png(rng)
    return out


def write_zip(path: Path, members: Dict[str, bytes], directories: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        if directories:
            for d in sorted({m.rsplit("/", 1)[0] + "/" for m in members}):
                zf.writestr(d, b"")
        for m, data in members.items():
            zf.writestr(m, data)
    return path


def write_tree(root: Path, members: Dict[str, bytes]) -> None:
    for m, data in members.items():
        p = root / m
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def write_sets(root: Path, sets: Sequence[str] = tuple(SETS), unzipped: bool = False) -> Dict[str, Dict[str, bytes]]:
    """The official sets as zips (or unzipped trees) under root; returns their members."""
    out = {}
    for name in sets:
        members = set_members(name, SETS[name])
        if unzipped:
            write_tree(root, members)
        else:
            write_zip(root / f"{name}.zip", members)
        out[name] = members
    return out


def runs_members(runs: int = 2, way: int = 3, seed: int = 1) -> Dict[str, bytes]:
    """all_runs.zip's members: runNN/training/classKK.png, runNN/test/itemMM.png, runNN/class_labels.txt
    (item m is of class (m * 2) % way + 1, a fixed shuffle)."""
    rng = np.random.default_rng(seed)
    out: Dict[str, bytes] = {}
    for r in range(1, runs + 1):
        run = f"run{r:02d}"
        lines: List[str] = []
        for k in range(1, way + 1):
            out[f"{run}/training/class{k:02d}.png"] = png(rng)
        for m in range(1, way + 1):
            out[f"{run}/test/item{m:02d}.png"] = png(rng)
            lines.append(f"{run}/test/item{m:02d}.png {run}/training/class{(m * 2) % way + 1:02d}.png")
        out[f"{run}/class_labels.txt"] = ("\n".join(lines) + "\n").encode()
    return out
