"""``metakd compare``: methods compared episode by episode on the fixed test episodes they share.

Inputs are result files of ``metakd eval`` (``eval_*.json``) or ``metakd robustness``
(``robustness.json``, one entry per model), or run folders holding one of them. Each result carries
its per-episode accuracies and the fingerprint of its episode list; two results are paired only when
the fingerprints agree (same episodes, same order). The first input is the baseline: for every
other method and every scenario both have, the report gives each method's mean ± Student-t 95% CI
over episodes and the paired difference (method − baseline) with its interval and a paired t-test.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

from ...atomic import atomic_write, write_json
from ...errors import MetakdError
from ...stats import format_interval, paired_difference, t_interval
from .checkpoint_eval import run_label

STANDARD = "standard"


def _scenario(row: Dict[str, Any]) -> str:
    return row["level"] if row.get("side") is None else f"{row['level']} / {row['side']}"


def _run_label(path: Path, name: str) -> str:
    """A result is named by its run folder (see ``run_label``), also when it lies in <run>/robustness/."""
    return run_label(path.parent if path.parent.name == "robustness" else path, name)


def _from_eval(path: Path, data: Dict[str, Any]) -> Dict[str, Any]:
    if "per_episode" not in data:
        raise MetakdError(f"{path}: no per-episode accuracies (written by an older metakd eval); evaluate the run again")
    label = data.get("run") or _run_label(Path(data.get("checkpoint", path)), data.get("name", "?"))
    return {"label": label, "source": str(path),
            "fingerprint": data.get("episodes_fingerprint"), "scenarios": {STANDARD: data["per_episode"]}}


def _from_robustness(path: Path, model: Dict[str, Any]) -> Dict[str, Any]:
    scen = {}
    for row in model["rows"]:
        if "per_episode" not in row:
            raise MetakdError(f"{path}: no per-episode accuracies (written by an older metakd robustness); run it again")
        scen[_scenario(row)] = row["per_episode"]
    label = model.get("run") or _run_label(Path(model.get("checkpoint", path)), model.get("name", "?"))
    return {"label": label, "source": str(path),
            "fingerprint": model.get("episodes_fingerprint"), "scenarios": scen}


def _result_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise MetakdError(f"{path}: no such result file or run folder")
    robust = path / "robustness" / "robustness.json"
    evals = sorted(path.glob("eval_*.json"))
    if robust.is_file():
        return robust
    if len(evals) == 1:
        return evals[0]
    if not evals:
        raise MetakdError(f"{path}: holds no eval_*.json or robustness/robustness.json; run `metakd eval {path}` first")
    raise MetakdError(f"{path}: holds several results ({', '.join(p.name for p in evals)}); name the file to compare")


def load_results(paths: Sequence[Path]) -> List[Dict[str, Any]]:
    """Every method found in ``paths`` (a robustness.json may hold several), in order."""
    runs: List[Dict[str, Any]] = []
    for p in paths:
        f = _result_file(Path(p))
        try:
            data = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MetakdError(f"{f}: not a readable metakd result ({type(exc).__name__}: {exc})") from None
        if isinstance(data, dict) and isinstance(data.get("models"), list):
            runs.extend(_from_robustness(f, m) for m in data["models"])
        elif isinstance(data, dict) and "accuracy" in data:
            runs.append(_from_eval(f, data))
        else:
            raise MetakdError(f"{f}: not a metakd eval or robustness result (expected 'accuracy' or 'models')")
    seen: Dict[str, int] = {}
    for r in runs:  # identical labels (one run folder listed twice, say) get a suffix
        n = seen[r["label"]] = seen.get(r["label"], 0) + 1
        if n > 1:
            r["label"] = f"{r['label']} #{n}"
    return runs


def compare_runs(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The baseline (first run) against every other run, per shared scenario."""
    if len(runs) < 2:
        raise MetakdError(f"compare needs at least two methods, found {len(runs)}")
    base = runs[0]
    rows = []
    for run in runs[1:]:
        if run["fingerprint"] != base["fingerprint"]:
            raise MetakdError(f"{run['label']} ({run['source']}) and {base['label']} ({base['source']}) were evaluated on "
                              "different episode lists (fingerprints differ): evaluate both with the same --episodes and --seed")
        shared = [s for s in base["scenarios"] if s in run["scenarios"]]
        if not shared:
            raise MetakdError(f"{run['label']} and {base['label']} share no scenario")
        for s in shared:
            a, b = run["scenarios"][s], base["scenarios"][s]
            rows.append({"method": run["label"], "baseline": base["label"], "scenario": s,
                         "method_acc": t_interval(a), "baseline_acc": t_interval(b),
                         "difference": paired_difference(a, b)})
    return {"baseline": base["label"], "episodes": len(base["scenarios"][next(iter(base["scenarios"]))]),
            "fingerprint": base["fingerprint"], "sources": [r["source"] for r in runs], "rows": rows}


def _p(p: float) -> str:
    return "n/a" if p != p else ("< 1e-4" if p < 1e-4 else f"{p:.4f}")


def compare_table(report: Dict[str, Any]) -> str:
    """Markdown: per (method, scenario), both accuracies and the paired difference with its test."""
    lines = [f"Paired over {report['episodes']} shared test episodes (fingerprint {str(report['fingerprint'])[:12]}); "
             f"baseline: {report['baseline']}. Accuracies in %, ± Student-t 95% CI.", "",
             "| method | scenario | method acc | baseline acc | difference (paired) | p (paired t) | episodes better / worse |",
             "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        m, b, d = r["method_acc"], r["baseline_acc"], r["difference"]
        lines.append(f"| {r['method']} | {r['scenario']} | {format_interval(m['mean'], m['ci'])} | "
                     f"{format_interval(b['mean'], b['ci'])} | {'+' if d['mean'] >= 0 else ''}{format_interval(d['mean'], d['ci'])} | "
                     f"{_p(d['p'])} | {d['a_better']} / {d['b_better']} |")
    return "\n".join(lines)


def plot_compare(report: Dict[str, Any], path: Path) -> Path:
    """Paired differences with their 95% CI, one bar per (method, scenario)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(rows) + 2), 4))
    x = list(range(len(rows)))
    ax.bar(x, [100 * r["difference"]["mean"] for r in rows],
           yerr=[100 * (r["difference"]["ci"] if r["difference"]["ci"] == r["difference"]["ci"] else 0) for r in rows],
           capsize=4, color=["tab:green" if r["difference"]["mean"] >= 0 else "tab:red" for r in rows])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{r['method']}\n{r['scenario']}" for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"accuracy − {report['baseline']} (points)")
    ax.set_title(f"paired difference over {report['episodes']} episodes (95% CI)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, buf.getvalue(), what="plot")


def run_compare(paths: Sequence[Path], out: Path | None = None) -> Dict[str, Any]:
    """Load, compare, and (with ``out``) write compare.{md,json,png} there. Returns the report + table."""
    report = compare_runs(load_results(paths))
    table = compare_table(report)
    if out is not None:
        out = Path(out)
        write_json(out / "compare.json", report, what="comparison")
        atomic_write(out / "compare.md", table + "\n", what="comparison")
        plot_compare(report, out / "compare.png")
        report["output_dir"] = str(out)
    report["table"] = table
    return report
