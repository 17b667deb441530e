"""Fixed external episodes: the 20 official Omniglot one-shot runs, and any episode list a user writes.

Both producers return a list of ``FixedEpisode``: one ``EpisodeBatch`` of one task each, with the id of
every support and query item kept, so results can be paired item by item across models. Images go
through the ``preprocess`` given (``strokes.StrokePreprocess`` for stroke data: the same function that
prepared the training images, then the same normalisation).

Episode-list file (CSV, UTF-8, a header row, one row per image; columns in any order)::

    episode,role,path,label
    ep1,support,imgs/a1.png,a
    ep1,support,imgs/b1.png,b
    ep1,query,imgs/a2.png,a

episode: the episode id (episodes keep the order of their first row). role: ``support`` or ``query``.
path: the image file, relative to the CSV's folder (or absolute). label: the class, any text; within an
episode, classes are numbered 0..N-1 in the order of their first support row, and every query label
must have a support image. Optional column ``id``: the item id in results (default: path as written).
Rows starting with ``#`` in the episode column are comments.

The official runs (``all_runs.zip`` or the unzipped ``runNN/`` folders): run NN is a 20-way 1-shot
episode; support = ``runNN/training/classKK.png`` (label KK-1), queries = ``runNN/test/itemMM.png`` in
the order of ``runNN/class_labels.txt``, whose lines read ``runNN/test/itemMM.png runNN/training/classKK.png``.
"""
from __future__ import annotations

import csv
import io
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import DataError
from .episode import EpisodeBatch

ROLES = ("support", "query")
COLUMNS = ("episode", "role", "path", "label")
_RUN = re.compile(r"^(?:.*/)?(run\d+)/(class_labels\.txt|training/[^/]+|test/[^/]+)$")


@dataclass
class FixedEpisode:
    """One externally fixed episode.

    batch: EpisodeBatch of one task (support_x (1, S, C, H, W), support_y (1, S), query_x (1, Q, C, H, W),
        query_y (1, Q)); n_way = number of classes; k_shot = the smallest number of support images of a
        class; q_query = ceil(Q / n_way) (query_x holds all Q queries).
    support_ids, query_ids: item ids (S,), (Q,) in the batch's row order.
    class_names: the class of each episode label (n_way,).
    source: the file it came from.
    """

    episode_id: str
    batch: EpisodeBatch
    support_ids: List[str]
    query_ids: List[str]
    class_names: List[str]
    source: str


def make_episode(episode_id: str, support: np.ndarray, support_y: Sequence[int], query: np.ndarray,
                 query_y: Sequence[int], support_ids: List[str], query_ids: List[str], class_names: List[str],
                 preprocess: Any, source: str) -> FixedEpisode:
    """A FixedEpisode from uint8 images (S, H, W, C) / (Q, H, W, C), converted by ``preprocess.tensor``."""
    n = len(class_names)
    sy = torch.as_tensor(np.asarray(support_y, np.int64))
    qy = torch.as_tensor(np.asarray(query_y, np.int64))
    counts = np.bincount(sy.numpy(), minlength=n)
    batch = EpisodeBatch(
        support_x=preprocess.tensor(support)[None], support_y=sy[None],
        query_x=preprocess.tensor(query)[None], query_y=qy[None],
        n_way=n, k_shot=int(counts.min()), q_query=math.ceil(len(query_ids) / n),
        augment_preset="glyph" if getattr(preprocess, "source_polarity", None) else None,
        mean=getattr(preprocess, "mean", None), std=getattr(preprocess, "std", None),
    )
    return FixedEpisode(episode_id, batch, support_ids, query_ids, class_names, source)


# ---------------------------------------------------------------------------------------------- episode lists


def load_episode_list(path: Union[str, Path], preprocess: Any) -> List[FixedEpisode]:
    """The episodes of an episode-list CSV (format in the module docstring), images through ``preprocess``
    (an object with ``image(source, where) -> uint8 (H, W, C)`` and ``tensor(uint8 (N, H, W, C)) -> float
    (N, C, H, W)``, e.g. ``StrokePreprocess``). DataError naming the file and line of any problem."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"episode list {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{str(path)!r}: cannot read the episode list ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}: line 1: the header must name the columns {', '.join(COLUMNS)} (optional: id); "
                        f"missing {', '.join(missing)}")
    episodes: Dict[str, Dict[str, list]] = {}
    for row in reader:
        line = reader.line_num
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if row["episode"].startswith("#") or not any(row.values()):
            continue
        empty = [c for c in COLUMNS if not row.get(c)]
        if empty:
            raise DataError(f"{path}: line {line}: empty {', '.join(empty)}")
        if row["role"] not in ROLES:
            raise DataError(f"{path}: line {line}: role must be support or query, got {row['role']!r}")
        image = Path(row["path"]).expanduser()
        image = image if image.is_absolute() else path.parent / image
        item = row.get("id") or row["path"]
        ep = episodes.setdefault(row["episode"], {"support": [], "query": []})
        ep[row["role"]].append((image, row["label"], item, line))
    if not episodes:
        raise DataError(f"{path}: the episode list has no rows")
    out = []
    for eid, ep in episodes.items():
        if not ep["support"] or not ep["query"]:
            raise DataError(f"{path}: episode {eid!r} needs support and query rows "
                            f"(has {len(ep['support'])} support, {len(ep['query'])} query)")
        classes: List[str] = []
        for _, label, _, _ in ep["support"]:
            if label not in classes:
                classes.append(label)
        for _, label, _, line in ep["query"]:
            if label not in classes:
                raise DataError(f"{path}: line {line}: query label {label!r} of episode {eid!r} has no support "
                                f"image (its support labels: {', '.join(classes)})")
        images = {role: np.stack([preprocess.image(p, f"{path}: line {line}: {p}") for p, _, _, line in ep[role]])
                  for role in ROLES}
        out.append(make_episode(
            eid, images["support"], [classes.index(lab) for _, lab, _, _ in ep["support"]],
            images["query"], [classes.index(lab) for _, lab, _, _ in ep["query"]],
            [i for _, _, i, _ in ep["support"]], [i for _, _, i, _ in ep["query"]], classes, preprocess, str(path)))
    return out


# ---------------------------------------------------------------------------------------------- the official runs


class _RunsSource:
    """all_runs.zip or a folder holding runNN/ folders: member names (``runNN/...``) -> bytes or path."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.members: Dict[str, str] = {}  # "runNN/rest" -> the zip member name or the relative file path
        if where.is_file():
            try:
                with zipfile.ZipFile(where) as zf:
                    names = zf.namelist()
            except (OSError, zipfile.BadZipFile) as exc:
                raise DataError(f"{str(where)!r}: not a readable zip ({type(exc).__name__}: {exc})") from exc
        elif where.is_dir():
            names = [p.relative_to(where).as_posix() for p in where.glob("run*/**/*") if p.is_file()]
        else:
            raise DataError(f"one-shot runs: {str(where)!r} does not exist")
        for name in names:
            if name.startswith("__MACOSX/"):
                continue
            m = _RUN.match(name)
            if m:
                self.members[f"{m.group(1)}/{m.group(2)}"] = name

    def label(self, key: str) -> str:
        return f"{self.where}:{key}" if self.where.is_file() else str(self.where / self.members[key])

    def read(self, keys: Sequence[str]) -> List[Union[bytes, Path]]:
        if self.where.is_dir():
            return [self.where / self.members[k] for k in keys]
        with zipfile.ZipFile(self.where) as zf:
            return [zf.read(self.members[k]) for k in keys]


def _num(name: str) -> Tuple[int, str]:
    digits = re.findall(r"\d+", name)
    return (int(digits[-1]) if digits else -1, name)


def scan_runs(where: Union[str, Path]) -> Dict[str, Dict[str, Any]]:
    """{run id: {"support": [keys], "queries": [(query key, class index)], "labels": labels-file key}} of
    all_runs.zip or a runs folder, checked against class_labels.txt (DataError naming file and line)."""
    src = _RunsSource(Path(where))
    runs: Dict[str, Dict[str, Any]] = {}
    for key in sorted(src.members):
        runs.setdefault(key.split("/")[0], {})
    if not runs:
        raise DataError(f"{str(where)!r}: no runNN/ folders (runNN/class_labels.txt, runNN/training/, runNN/test/)")
    texts = src.read([f"{r}/class_labels.txt" for r in runs if f"{r}/class_labels.txt" in src.members])
    texts_by_run = dict(zip([r for r in runs if f"{r}/class_labels.txt" in src.members], texts))
    for run, info in runs.items():
        lab_key = f"{run}/class_labels.txt"
        if run not in texts_by_run:
            raise DataError(f"{src.label(next(k for k in src.members if k.startswith(run + '/')))}: "
                            f"{run} has no class_labels.txt")
        support = sorted((k for k in src.members if k.startswith(f"{run}/training/")), key=_num)
        tests = {k for k in src.members if k.startswith(f"{run}/test/")}
        if not support or not tests:
            raise DataError(f"{src.label(lab_key)}: {run} needs images in training/ and test/")
        raw = texts_by_run[run]
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else Path(raw).read_text("utf-8", "replace")
        queries: List[Tuple[str, int]] = []
        seen: set = set()
        for no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            bad = None
            if len(parts) != 2:
                bad = "expected two paths"
            else:
                item, cls = (p.replace("\\", "/") for p in parts)
                item = item if item.startswith(run + "/") else f"{run}/{item}"
                cls = cls if cls.startswith(run + "/") else f"{run}/{cls}"
                if item not in tests:
                    bad = f"{parts[0]!r} is not an image in {run}/test/"
                elif cls not in support:
                    bad = f"{parts[1]!r} is not an image in {run}/training/"
                elif item in seen:
                    bad = f"{parts[0]!r} is labelled twice"
            if bad:
                raise DataError(f"{src.label(lab_key)} line {no}: {bad}; expected '{run}/test/itemMM.png "
                                f"{run}/training/classKK.png', got {line.strip()!r}")
            seen.add(item)
            queries.append((item, support.index(cls)))
        unlabelled = sorted(tests - seen, key=_num)
        if unlabelled:
            raise DataError(f"{src.label(lab_key)}: no label for {', '.join(unlabelled[:3])}"
                            f"{' ...' if len(unlabelled) > 3 else ''}")
        info.update(support=support, queries=queries, labels=lab_key)
    return runs


RUNS_SEARCH_DIRS = ("", "python", "omniglot-py", "omniglot")  # sub-folders of an Omniglot ROOT (as its sets')


def find_runs(root: Path) -> Optional[Path]:
    """all_runs.zip, or a folder holding run01/, under ROOT (also ROOT/python/one-shot-classification)."""
    for sub in RUNS_SEARCH_DIRS + ("python/one-shot-classification",):
        base = root / sub if sub else root
        if (base / "all_runs.zip").is_file():
            return base / "all_runs.zip"
        for folder in (base / "all_runs", base):
            if (folder / "run01").is_dir():
                return folder
    return None


def omniglot_runs(root: Union[str, Path], preprocess: Any) -> List[FixedEpisode]:
    """The official one-shot runs as FixedEpisode (20 runs of 20-way 1-shot, 20 queries each), in run order.

    root: the Omniglot ROOT (searched as ``find_runs``), all_runs.zip itself, or a folder of runNN/.
    Item ids are the paths inside the runs ("run01/test/item01.png"); class names "run01/training/class01.png".
    """
    where = Path(root).expanduser()
    if where.is_dir() and not (where / "run01").is_dir():
        found = find_runs(where)
        if found is None:
            raise DataError(f"{str(where)!r}: no one-shot runs (all_runs.zip, all_runs/run01/ or run01/)")
        where = found
    src = _RunsSource(where)
    out = []
    for run, info in scan_runs(where).items():
        support_keys, queries = info["support"], info["queries"]
        query_keys = [q for q, _ in queries]
        raw = src.read(support_keys + query_keys)
        images = np.stack([preprocess.image(r, src.label(k)) for r, k in zip(raw, support_keys + query_keys)])
        s = len(support_keys)
        out.append(make_episode(run, images[:s], list(range(s)), images[s:], [c for _, c in queries],
                                support_keys, query_keys, list(support_keys), preprocess, str(where)))
    return out
