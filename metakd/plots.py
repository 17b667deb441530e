"""Figures a person reads at a glance, from result dicts (no training or evaluation code here).

``plot_demo_accuracy``: the demo's methods side by side, test accuracy with 95% intervals on the standard
episodes and on the same episodes with a perturbed support set (weak / strong), as one grouped bar chart.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

from .atomic import atomic_write


def save_figure(fig: Any, path: Union[str, Path], what: str, dpi: int = 110) -> Path:
    """``fig`` laid out and written as a PNG through ``metakd.atomic`` (a reader never sees half a file), then
    closed; returns the path. ``what`` names the figure in errors."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    try:
        atomic_write(path, lambda f: fig.savefig(f, dpi=dpi, format="png"), what=what)
    finally:
        plt.close(fig)
    return path


def method_label(row: Dict[str, Any]) -> str:
    """A result row's method name: the learner, and for MSD its host (``msd+maml``)."""
    if row["learner"] == "msd":
        return f"msd+{row.get('config', {}).get('learner', {}).get('options', {}).get('host', 'maml')}"
    return row["learner"]


def plot_demo_accuracy(rows: Sequence[Dict[str, Any]], path: Union[str, Path], title: str = "") -> Path:
    """Grouped bars: one group per scenario (``standard``, then each key of ``row["scenarios"]``), one bar
    per method, height = test accuracy (%) and error bar = its 95% CI, value written above each bar.

    rows: result dicts with ``learner``, ``accuracy``, ``ci95`` (fractions), optionally ``scenarios``
        ({"weak support": {"accuracy", "ci95"}, ...}) and ``episodes``. Written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(rows)
    scenarios: List[str] = ["standard"] + (list(rows[0].get("scenarios") or {}) if rows else [])

    def cell(row: Dict[str, Any], scenario: str):
        r = row if scenario == "standard" else (row.get("scenarios") or {}).get(scenario)
        return (100 * r["accuracy"], 100 * r["ci95"]) if r else (float("nan"), 0.0)

    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(scenarios), 4.2))
    lowest = 100.0
    for i, row in enumerate(rows):
        values = [cell(row, s) for s in scenarios]
        xs = [g - 0.4 + width * (i + 0.5) for g in range(len(scenarios))]
        bars = ax.bar(xs, [v for v, _ in values], width, yerr=[c for _, c in values], capsize=3,
                      label=method_label(row))
        for bar, (v, c) in zip(bars, values):
            if v == v:  # not NaN
                ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v + c), ha="center", va="bottom",
                            fontsize=7, xytext=(0, 2), textcoords="offset points")
                lowest = min(lowest, v - c)
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels([s if s == "standard" else f"{s}\nperturbed" for s in scenarios])
    ax.set_ylim(max(0.0, 10 * (int(lowest) // 10) - 10), 107)
    ax.set_ylabel("test accuracy (%) ± 95% CI")
    episodes = rows[0].get("episodes") if rows else None
    ax.set_title(title or (f"test accuracy on {episodes} fixed episodes" if episodes else "test accuracy"))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right", ncol=len(rows), fontsize=8, frameon=False)
    return save_figure(fig, path, "accuracy plot", dpi=120)
