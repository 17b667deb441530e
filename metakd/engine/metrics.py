"""Accuracy summaries, JSON-lines logs and the training-curve plot."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

import numpy as np


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
    """Appends one JSON object per line; safe to reopen after a resume."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, record: Dict[str, object]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def truncate_after(self, step: int) -> None:
        """Drop records written after ``step`` (a resumed run rewrites them)."""
        if not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, self.path)

    def read(self) -> List[Dict[str, object]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


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
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
