"""Accuracy summaries, JSON-lines logs and the training-curve plot."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

import numpy as np

from ..atomic import atomic_write, write_error
from ..errors import MetakdError


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% confidence half-width over episodes: 1.96·std/√n (std with ddof=0, as in the
    original MAML evaluation code). Both in the units of ``values``."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    return float(arr.mean()), float(1.96 * arr.std() / math.sqrt(arr.size))


def format_acc(mean: float, ci: float) -> str:
    """``0.4870, 0.0184`` -> ``'48.70 ± 1.84'`` (percent)."""
    return f"{100 * mean:.2f} ± {100 * ci:.2f}"


class JsonlLogger:
    """Appends one JSON object per line; safe to reopen after a resume. A last line torn by a crash
    mid-write is skipped when reading and removed by ``truncate_after``."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def log(self, record: Dict[str, object]) -> None:
        line = json.dumps(record) + "\n"
        try:
            try:
                f = open(self.path, "a")
            except FileNotFoundError:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                f = open(self.path, "a")
            with f:
                f.write(line)
                f.flush()
        except OSError as exc:
            raise write_error(self.path, exc, "metrics log") from None

    def _records(self) -> List[Dict[str, object]]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise MetakdError(f"cannot read the metrics log {self.path}: {exc}") from None
        out = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:  # torn by a crash mid-write
                    break
                raise MetakdError(f"the metrics log {self.path} is damaged at line {i + 1} (not JSON)") from None
            out.append(rec)
        return out

    def truncate_after(self, step: int, drop_at_step: Sequence[str] = ()) -> None:
        """Drop records written after ``step``, and those of the kinds ``drop_at_step`` at ``step`` (a resumed
        run rewrites them), and a torn last line."""
        if not self.path.exists():
            return
        keep = [r for r in self._records()
                if r.get("step", 0) < step or (r.get("step", 0) == step and r.get("kind") not in drop_at_step)]
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in keep), what="metrics log")

    def read(self) -> List[Dict[str, object]]:
        return self._records()


def plot_curves(records: Iterable[Dict[str, object]], path: Path, title: str = "") -> Path:
    """Training loss/accuracy and validation accuracy (with CI band) against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
        ax_acc.plot([r["step"] for r in train], [100 * r["acc"] for r in train], lw=1, label="train (query)")
    if val:
        steps = np.array([r["step"] for r in val])
        acc = 100 * np.array([r["acc"] for r in val])
        ci = 100 * np.array([r["ci95"] for r in val])
        ax_acc.plot(steps, acc, marker="o", ms=3, label="validation")
        ax_acc.fill_between(steps, acc - ci, acc + ci, alpha=0.25)
    ax_loss.set(xlabel="meta-iteration", ylabel="meta-loss", title="training loss")
    ax_acc.set(xlabel="meta-iteration", ylabel="accuracy (%)", title="accuracy")
    ax_acc.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    try:
        atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"), what="training curves")
    finally:
        plt.close(fig)
    return path
