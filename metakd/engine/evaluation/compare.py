"""``metakd compare``: methods compared on the fixed test episodes they share, at seed level when each
method has several training runs (seeds), and with Holm's correction when several comparisons are made.

Inputs are result files of ``metakd eval`` (``eval_*.json``) or ``metakd robustness``
(``robustness.json``, one entry per model), or run folders holding one of them. A method with several
seeds is one argument ``LABEL=RUN,RUN,...`` (one run per seed, each evaluated on the same episodes; the
i-th runs of two methods are paired, and must share their training seed when the results record it).
Each result carries its per-episode accuracies and the fingerprint of its episode list; two results
are paired only when the fingerprints agree (same episodes, same order). The first method is the
baseline: for every other method and every scenario both have, the report gives

- each method's accuracy: mean over seeds ± Student-t 95% CI (one seed: over its episodes);
- the difference (method − baseline) at seed level: the paired t test over the per-seed mean
  differences, n_seeds − 1 degrees of freedom. This is the statement about the methods;
- within each seed, the per-episode paired difference with its interval and paired t test. It is
  labelled within-seed: it describes one trained pair of models, not the methods (training runs vary
  more than a seed's episodes show). With one seed per method it is the only test there is, and the
  table says so. Seeds x episodes are never pooled (the same episodes evaluated once per seed are not
  independent samples);
- with more than one comparison, Holm's adjusted p over all of them (each comparison's own test: seed
  level where there are several seeds, else within-seed).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ...atomic import atomic_write, write_json
from ...errors import MetakdError
from ...stats import format_interval, holm_adjust, paired_difference, seed_level_test, t_interval
from .checkpoint_eval import run_label

STANDARD = "standard"


def _scenario(row: Dict[str, Any]) -> str:
    return row["level"] if row.get("side") is None else f"{row['level']} / {row['side']}"


def _run_label(path: Path, name: str) -> str:
    """A result is named by its run folder (see ``run_label``), also when it lies in <run>/robustness/."""
    return run_label(path.parent if path.parent.name == "robustness" else path, name)


def _from_eval(path: Path, data: Dict[str, Any]) -> Dict[str, Any]:
    if "per_item_correct" in data:  # external fixed episodes (e.g. the Omniglot runs): paired item by item
        label = data.get("run") or _run_label(Path(data.get("checkpoint", path)), data.get("name", "?"))
        return {"label": label, "source": str(path), "train_seed": data.get("train_seed"),
                "fingerprint": data.get("items_fingerprint"),
                "scenarios": {f"{data.get('split', 'fixed')} (per item)": [float(c) for c in data["per_item_correct"]]}}
    if "per_episode" not in data:
        raise MetakdError(f"{path}: no per-episode accuracies (written by an older metakd eval); evaluate the run again")
    label = data.get("run") or _run_label(Path(data.get("checkpoint", path)), data.get("name", "?"))
    return {"label": label, "source": str(path), "train_seed": data.get("train_seed"),
            "fingerprint": data.get("episodes_fingerprint"), "scenarios": {STANDARD: data["per_episode"]}}


def _from_robustness(path: Path, model: Dict[str, Any]) -> Dict[str, Any]:
    scen = {}
    for row in model["rows"]:
        if "per_episode" not in row:
            raise MetakdError(f"{path}: no per-episode accuracies (written by an older metakd robustness); run it again")
        scen[_scenario(row)] = row["per_episode"]
    label = model.get("run") or _run_label(Path(model.get("checkpoint", path)), model.get("name", "?"))
    return {"label": label, "source": str(path), "train_seed": model.get("train_seed"),
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


def _load_file(p: Path) -> List[Dict[str, Any]]:
    """Every result in one file or run folder (a robustness.json may hold several models)."""
    f = _result_file(Path(p))
    try:
        data = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetakdError(f"{f}: not a readable metakd result ({type(exc).__name__}: {exc})") from None
    if isinstance(data, dict) and isinstance(data.get("models"), list):
        return [_from_robustness(f, m) for m in data["models"]]
    if isinstance(data, dict) and "accuracy" in data:
        return [_from_eval(f, data)]
    raise MetakdError(f"{f}: not a metakd eval or robustness result (expected 'accuracy' or 'models')")


def _unique_labels(items: List[Dict[str, Any]]) -> None:
    seen: Dict[str, int] = {}
    for r in items:  # identical labels (one run folder listed twice, say) get a suffix
        n = seen[r["label"]] = seen.get(r["label"], 0) + 1
        if n > 1:
            r["label"] = f"{r['label']} #{n}"


def load_results(paths: Sequence[Path]) -> List[Dict[str, Any]]:
    """Every result found in ``paths`` (a robustness.json may hold several), in order; one seed each."""
    runs = [r for p in paths for r in _load_file(Path(p))]
    _unique_labels(runs)
    return runs


Spec = Union[str, Path]


def parse_spec(spec: Spec) -> Tuple[Optional[str], List[Path]]:
    """``LABEL=RUN,RUN,...`` -> (LABEL, runs); ``RUN,RUN`` -> (None, runs); an existing path is itself."""
    text = str(spec)
    if isinstance(spec, Path) or Path(text).exists():
        return None, [Path(text)]
    label, sep, rest = text.partition("=")
    if sep and (not label or not rest):
        raise MetakdError(f"{text!r}: a method with several seeds is LABEL=RUN,RUN,... (label and runs both given)")
    paths = [Path(x) for x in (rest if sep else text).split(",") if x]
    if not paths:
        raise MetakdError(f"{text!r}: names no result")
    return (label if sep else None), paths


def load_methods(specs: Sequence[Spec]) -> List[Dict[str, Any]]:
    """Methods in order, each {"label", "runs": [one result per seed]}. A plain argument is one method per
    result it holds (a robustness.json with two models gives two methods, one seed each); ``LABEL=RUN,...``
    is one method whose runs are its seeds (each must hold exactly one result)."""
    methods: List[Dict[str, Any]] = []
    for spec in specs:
        label, paths = parse_spec(spec)
        if label is None and len(paths) == 1:
            methods.extend({"label": r["label"], "runs": [r]} for r in _load_file(paths[0]))
            continue
        runs = []
        for p in paths:
            found = _load_file(p)
            if len(found) != 1:
                raise MetakdError(f"{p}: holds {len(found)} models; a seed of method {label or spec!r} must be one "
                                  "result (name a run folder or an eval_*.json)")
            runs.extend(found)
        methods.append({"label": label or " + ".join(r["label"] for r in runs), "runs": runs})
    _unique_labels(methods)
    return methods


def _check_pairable(method: Dict[str, Any], base: Dict[str, Any]) -> None:
    if len(method["runs"]) != len(base["runs"]):
        raise MetakdError(f"{method['label']} has {len(method['runs'])} seed(s) and {base['label']} has "
                          f"{len(base['runs'])}: a seed-level comparison pairs seed i with seed i; give both the same seeds")
    for i, (a, b) in enumerate(zip(method["runs"], base["runs"])):
        if a["fingerprint"] != b["fingerprint"]:
            raise MetakdError(f"{a['label']} ({a['source']}) and {b['label']} ({b['source']}) were evaluated on "
                              "different episode lists (fingerprints differ): evaluate both with the same --episodes and --seed")
        if len(base["runs"]) > 1 and a.get("train_seed") is not None and b.get("train_seed") is not None \
                and a["train_seed"] != b["train_seed"]:  # one run each: any two runs may be compared
            raise MetakdError(f"seed {i + 1} of {method['label']} was trained with seed {a['train_seed']} and of "
                              f"{base['label']} with seed {b['train_seed']}: list each method's runs in the same seed order")


def _accuracy(runs: List[Dict[str, Any]], scenario: str) -> Dict[str, Any]:
    """Mean over seeds ± t CI of the per-seed accuracies; with one seed, over its episodes."""
    if len(runs) == 1:
        return {**t_interval(runs[0]["scenarios"][scenario]), "over": "episodes (one seed)"}
    return {**t_interval([sum(r["scenarios"][scenario]) / len(r["scenarios"][scenario]) for r in runs]),
            "over": "seeds"}


def compare_methods(methods: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The baseline (first method) against every other method, per shared scenario; Holm over all rows."""
    if len(methods) < 2:
        raise MetakdError(f"compare needs at least two methods, found {len(methods)}")
    base = methods[0]
    rows = []
    for method in methods[1:]:
        _check_pairable(method, base)
        shared = [s for s in base["runs"][0]["scenarios"] if all(s in r["scenarios"] for r in method["runs"] + base["runs"])]
        if not shared:
            raise MetakdError(f"{method['label']} and {base['label']} share no scenario")
        for s in shared:
            within = []
            for i, (a, b) in enumerate(zip(method["runs"], base["runs"])):
                d = paired_difference(a["scenarios"][s], b["scenarios"][s])
                within.append({**d, "level": "within-seed", "seed": a.get("train_seed", i)})
            seed = seed_level_test([w["mean"] for w in within]) if len(within) > 1 else None
            rows.append({"method": method["label"], "baseline": base["label"], "scenario": s, "seeds": len(within),
                         "method_acc": _accuracy(method["runs"], s), "baseline_acc": _accuracy(base["runs"], s),
                         "seed_level": seed, "within_seed": within,
                         "difference": seed if seed is not None else within[0]})
    adjusted = holm_adjust([r["difference"]["p"] for r in rows])
    for r, q in zip(rows, adjusted):
        r["p_holm"] = q if len(rows) > 1 else None
    first = base["runs"][0]
    return {"baseline": base["label"], "episodes": len(first["scenarios"][next(iter(first["scenarios"]))]),
            "fingerprint": first["fingerprint"], "comparisons": len(rows), "holm": len(rows) > 1,
            "sources": [r["source"] for m in methods for r in m["runs"]],
            "methods": [{"label": m["label"], "sources": [r["source"] for r in m["runs"]]} for m in methods],
            "rows": rows}


def compare_runs(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """``compare_methods`` with one seed per result (what ``load_results`` gives)."""
    return compare_methods([{"label": r["label"], "runs": [r]} for r in runs])


def _p(p: Optional[float]) -> str:
    return "n/a" if p is None or p != p else ("< 1e-4" if p < 1e-4 else f"{p:.4f}")


def _signed(d: Dict[str, Any]) -> str:
    return f"{'+' if d['mean'] >= 0 else ''}{format_interval(d['mean'], d['ci'])}"


def compare_table(report: Dict[str, Any]) -> str:
    """Markdown: per (method, scenario), both accuracies, the seed-level difference and test, Holm's p, and the
    within-seed per-episode paired differences, each labelled by its level."""
    rows = report["rows"]
    single = [r for r in rows if r["seed_level"] is None]
    lines = [f"Paired on {report['episodes']} shared test episodes (fingerprint {str(report['fingerprint'])[:12]}); "
             f"baseline: {report['baseline']}. Accuracies in %: mean over seeds ± Student-t 95% CI (one seed: over "
             "its episodes). Seed level: mean of the per-seed mean paired differences ± Student-t 95% CI and the paired "
             "t test over seeds (n_seeds − 1 dof), the test of the methods. Within seed: each seed's per-episode paired "
             "difference ± t 95% CI (one trained pair of models; seeds x episodes are not pooled)."
             + (f" Holm's adjusted p over the {len(rows)} comparisons." if report.get("holm") else ""), ""]
    if single:
        lines += ["With one seed per method the only test is within that seed: it says these two trained models "
                  "differ on these episodes, not that the methods do. Give each method several seeds "
                  "(LABEL=RUN,RUN,...) for a seed-level test.", ""]
    head = "| method | scenario | seeds | method acc | baseline acc | difference, seed level | p (seed level) |"
    rule = "|---|---|---|---|---|---|---|"
    if report.get("holm"):
        head, rule = head + " Holm p |", rule + "---|"
    lines += [head + " within seed: difference (p; episodes better / worse) |", rule + "---|"]
    for r in rows:
        m, b, sl = r["method_acc"], r["baseline_acc"], r["seed_level"]
        within = "; ".join((f"seed {w['seed']}: " if r["seeds"] > 1 else "")
                           + f"{_signed(w)} (p {_p(w['p'])}; {w['a_better']} / {w['b_better']})" for w in r["within_seed"])
        cells = [r["method"], r["scenario"], str(r["seeds"]), format_interval(m["mean"], m["ci"]),
                 format_interval(b["mean"], b["ci"]), _signed(sl) if sl else "n/a (one seed)",
                 _p(sl["p"]) if sl else "n/a"]
        if report.get("holm"):
            cells.append(_p(r["p_holm"]) + ("" if sl else " (within seed)"))
        lines.append("| " + " | ".join(cells + [within]) + " |")
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
    levels = {r["difference"].get("level", "within-seed") for r in rows}
    over = "seeds (seed level)" if levels == {"seed"} else (
        f"{report['episodes']} episodes (within one seed)" if levels == {"within-seed"} else "seeds or episodes (see table)")
    ax.set_title(f"paired difference over {over}, 95% CI")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, buf.getvalue(), what="plot")


def run_compare(specs: Sequence[Spec], out: Path | None = None) -> Dict[str, Any]:
    """Load, compare, and (with ``out``) write compare.{md,json,png} there. Returns the report + table.
    specs: result files or run folders, or ``LABEL=RUN,RUN,...`` for a method with several seeds."""
    report = compare_methods(load_methods(specs))
    table = compare_table(report)
    if out is not None:
        out = Path(out)
        write_json(out / "compare.json", report, what="comparison")
        atomic_write(out / "compare.md", table + "\n", what="comparison")
        plot_compare(report, out / "compare.png")
        report["output_dir"] = str(out)
    report["table"] = table
    return report
