"""``metakd robustness``: checkpoints under the augmented test scenario (MSD's evaluation protocol).

Every checkpoint is evaluated on the same fixed test episodes as ``metakd eval`` (same split, count
and seed), once without perturbation ("standard") and once per (level, side) of the scenario: level
"weak" or "strong" of the data's augmentation preset (``metakd.data.augment.PRESETS``: "glyph" for
the glyphs and Omniglot, never flipping; "natural" for photos; ``preset=`` overrides it), applied to
the "support", "query" or "both" sets. An episode's perturbation is seeded by (scenario seed, its
index in the list), so every checkpoint sees the same perturbed images. Level "ood" (asked for by name:
``--levels standard weak strong ood``) perturbs outside the family of any preset's training views:
gaussian pixel noise and an occluding rectangle. Each cell reports accuracy
± 95% CI over episodes and the consistency metric (mean cosine similarity between the query
predictions of models adapted on ``consistency_views`` differently augmented copies of the support
set, drawn with the preset's MSD views; see ``evaluate_episodes``). Every model entry, the table and the notes name the preset applied.

Outputs in ``out``: robustness.json, robustness.md (a table) and robustness.png (bar chart), all
written atomically.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ...atomic import atomic_write, check_writable, write_with_fallback
from ...data.augment import ALL_LEVELS, LEVELS, PRESETS, SIDES, get_preset
from ...errors import MetakdError
from ...validate import consistency_views as check_views
from ...validate import integer, positive_int
from ..assembly import describe_device, resolve_device
from ..runs.checkpoint import find_checkpoint
from ..runs.folder import writing_into_run
from ..runs.metrics import format_acc
from .checkpoint_eval import prepare_evaluation, run_label
from .episodes import evaluate_episodes

STANDARD = "standard"


def scenarios(levels: Sequence[str], sides: Sequence[str]) -> List[tuple]:
    """(level, side) pairs to evaluate; "standard" has side None. Unknown names raise MetakdError."""
    for level in levels:
        if level != STANDARD and level not in ALL_LEVELS:
            raise MetakdError(f"unknown scenario level {level!r}; choose from {STANDARD}, {', '.join(ALL_LEVELS)}")
    for side in sides:
        if side not in SIDES:
            raise MetakdError(f"unknown scenario side {side!r}; choose from {', '.join(SIDES)}")
    out = []
    for level in dict.fromkeys(levels):
        out.extend([(level, None)] if level == STANDARD else [(level, side) for side in dict.fromkeys(sides)])
    return out


def evaluate_robustness(path: Path, *, episodes: Optional[int] = None, seed: Optional[int] = None,
                        levels: Sequence[str] = (STANDARD, *LEVELS), sides: Sequence[str] = SIDES,
                        consistency_views: int = 4, scenario_seed: int = 0, device: str = "auto",
                        batch_size: Optional[int] = None, root: Optional[str] = None,
                        progress: bool = True, preset: Optional[str] = None, split: str = "test") -> Dict[str, Any]:
    """One checkpoint (file or run dir) under every scenario; returns its info and one row per scenario.

    split: the split whose fixed episodes are perturbed ("val" for choices made before the test is read).

    preset: "natural" or "glyph", the augmentation preset of the levels and consistency copies; None
    (default): the checkpoint's data's (``augment_preset`` of its sampler). Returned as ``augment_preset``."""
    _check_counts(episodes, batch_size, consistency_views, scenario_seed, preset)
    todo = scenarios(levels, sides)
    dev = resolve_device(device)
    ckpt_path, learner, ckpt, sampler, fixed, episodes, seed = prepare_evaluation(
        path, dev, split=split, episodes=episodes, seed=seed, root=root)
    cfg = ckpt["config"]
    batch_size = positive_int(cfg["eval"]["batch_size"] if batch_size is None else batch_size, "batch_size")
    applied = get_preset(preset if preset is not None else getattr(sampler, "augment_preset", None)).name
    rows = []
    for level, side in todo:
        res = evaluate_episodes(learner, sampler, fixed, batch_size=batch_size,
                                progress=progress, desc=f"{cfg['name']} {level}{'/' + side if side else ''}",
                                consistency_views=consistency_views,
                                scenario=None if side is None else (level, side), scenario_seed=scenario_seed,
                                preset=applied)
        row = {"level": level, "side": side, "accuracy": res["acc"], "ci95": res["ci95"], "episodes": res["episodes"],
               "seconds": res["seconds"], "per_episode": res["per_episode"]}
        if consistency_views:
            row.update(consistency=res["consistency"], consistency_ci95=res["consistency_ci95"])
        rows.append(row)
    ep = cfg["episodes"]
    return {"name": cfg["name"], "run": run_label(ckpt_path, cfg["name"]), "checkpoint": str(ckpt_path), "step": ckpt["step"], "learner": cfg["learner"]["name"],
            "learner_options": cfg["learner"]["options"], "backbone": cfg["model"]["backbone"],
            "dataset": cfg["data"]["dataset"], "n_way": ep["n_way"], "k_shot": ep["k_shot"], "q_query": ep["test_q_query"],
            "split": split, "episodes": episodes, "episode_seed": seed, "episodes_fingerprint": res["fingerprint"],
            "scenario_seed": scenario_seed, "consistency_views": consistency_views, "augment_preset": applied,
            "rows": rows}


def _check_counts(episodes: Optional[int], batch_size: Optional[int], consistency_views: int, scenario_seed: int,
                  preset: Optional[str] = None) -> None:
    for value, name in ((episodes, "episodes"), (batch_size, "batch_size")):
        if value is not None:
            positive_int(value, name)
    check_views(consistency_views)
    integer(scenario_seed, "scenario_seed")
    if preset is not None and preset not in PRESETS:
        raise MetakdError(f"unknown augmentation preset {preset!r}; choose from {', '.join(PRESETS)}")


def model_label(model: Dict[str, Any]) -> str:
    host = model["learner_options"].get("host") if model["learner"] == "msd" else None
    return f"{model.get('run', model['name'])} ({model['learner']}{'+' + host if host else ''})"


def scenario_label(row: Dict[str, Any]) -> str:
    return row["level"] if row["side"] is None else f"{row['level']} / {row['side']}"


def robustness_table(models: List[Dict[str, Any]]) -> str:
    """Markdown: one line per (model, scenario), accuracy ± CI and consistency ± CI, and the augmentation
    preset whose levels perturbed the episodes."""
    lines = ["| model | scenario | preset | accuracy (%) ± 95% CI | consistency ± 95% CI | episodes |",
             "|---|---|---|---|---|---|"]
    for m in models:
        for r in m["rows"]:
            cons = f"{r['consistency']:.4f} ± {r['consistency_ci95']:.4f}" if "consistency" in r else "–"
            lines.append(f"| {model_label(m)} | {scenario_label(r)} | {m.get('augment_preset', '–')} | "
                         f"{format_acc(r['accuracy'], r['ci95'])} | {cons} | {r['episodes']} |")
    return "\n".join(lines)


def scenario_notes(presets: Sequence[str] = ("natural",)) -> str:
    """The exact perturbation parameters of the presets applied, for the report."""
    lines = []
    for name in dict.fromkeys(presets):
        p = get_preset(name)
        lines.append(f"Augmentation preset {p.name!r} ({p.description}; metakd.data.augment.PRESETS[{p.name!r}]):")
        for level, s in [*p.levels.items(), ("consistency copies (MSD views)", p.views)]:
            lines.append(f"- {level}: " + ", ".join(f"{k}={v}" for k, v in s.as_dict().items()))
    return "\n".join(lines)


def plot_robustness(models: List[Dict[str, Any]], path: Path) -> Path:
    """Grouped bars per scenario (one bar per model, CI error bars): accuracy, and consistency when measured."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [scenario_label(r) for r in models[0]["rows"]]
    has_cons = all("consistency" in r for m in models for r in m["rows"])
    fig, axes = plt.subplots(1, 2 if has_cons else 1, figsize=(max(6, 1.3 * len(labels)) * (2 if has_cons else 1), 4),
                             squeeze=False)
    x = np.arange(len(labels))
    width = 0.8 / len(models)
    panels = [("accuracy", "ci95", 100.0, "accuracy (%)")] + ([("consistency", "consistency_ci95", 1.0, "consistency")]
                                                             if has_cons else [])
    for ax, (key, ci_key, scale, ylabel) in zip(axes[0], panels):
        for i, m in enumerate(models):
            vals = [scale * r[key] for r in m["rows"]]
            errs = [scale * r[ci_key] for r in m["rows"]]
            ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, yerr=errs, capsize=3, label=model_label(m))
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"robustness on {models[0]['episodes']} fixed test episodes (95% CI)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, buf.getvalue(), what="robustness chart")


def run_robustness(checkpoints: Sequence[Path], *, out: Optional[Path] = None, **kwargs: Any) -> Dict[str, Any]:
    """Evaluate every checkpoint (``evaluate_robustness`` kwargs) and write robustness.{json,md,png} to
    ``out`` (default: ``<run dir>/robustness`` for one checkpoint, ``./robustness`` for several)."""
    if not checkpoints:
        raise MetakdError("robustness: give at least one checkpoint or run directory")
    _check_counts(kwargs.get("episodes"), kwargs.get("batch_size"), kwargs.get("consistency_views", 4),
                  kwargs.get("scenario_seed", 0), kwargs.get("preset"))
    scenarios(kwargs.get("levels", (STANDARD, *LEVELS)), kwargs.get("sides", SIDES))
    if out is None:
        first = Path(checkpoints[0])
        out = (first if first.is_dir() else first.parent) / "robustness" if len(checkpoints) == 1 else Path("robustness")
    out = Path(out)
    names = [f"{out.name}/robustness.{ext}" for ext in ("json", "md", "png")] + [out.name]
    with writing_into_run(out.absolute().parent, names):  # a run folder: its one-writer lock, its manifest
        return _run_robustness(checkpoints, out, **kwargs)


def _run_robustness(checkpoints: Sequence[Path], out: Path, **kwargs: Any) -> Dict[str, Any]:
    for c in checkpoints:
        find_checkpoint(c, "best")
    check_writable(out / "robustness.json", "robustness report")  # before the work, not after
    start = time.perf_counter()
    models = [evaluate_robustness(Path(c), **kwargs) for c in checkpoints]
    same = len({m["episodes_fingerprint"] for m in models}) == 1
    presets = list(dict.fromkeys(m["augment_preset"] for m in models))
    report = {"models": models, "same_episodes": same, "augment_presets": presets,
              "scenario_levels": {n: {k: v.as_dict() for k, v in PRESETS[n].levels.items()} for n in presets},
              "device": describe_device(resolve_device(kwargs.get("device", "auto"))),
              "seconds": time.perf_counter() - start}
    table = robustness_table(models)
    header = (f"Fixed test episodes: {models[0]['episodes']} (seed {models[0]['episode_seed']}, fingerprint "
              f"{models[0]['episodes_fingerprint'][:12]}{'' if same else '; WARNING: models were evaluated on different episode lists'}), "
              f"scenario seed {models[0]['scenario_seed']}, consistency over {models[0]['consistency_views']} augmented "
              f"support copies, augmentation preset {' / '.join(presets)} (the data's unless overridden).\n\n")
    def write(folder: Path) -> None:
        atomic_write(folder / "robustness.json", json.dumps(report, indent=2), what="robustness report")
        atomic_write(folder / "robustness.md", header + table + "\n\n" + scenario_notes(presets) + "\n", what="robustness table")
        plot_robustness(models, folder / "robustness.png")

    # a write that fails after all the evaluating (disk full, folder gone) goes to a temporary folder instead
    out, error = write_with_fallback(out / "robustness.json", lambda p: write(p.parent), "metakd-robustness-")
    report["table"] = table
    report["output_dir"] = str(out.parent)
    if error:
        report["output_error"] = error
    return report
