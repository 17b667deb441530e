"""Writing benchmark results: atomically (temporary file + rename), a JSON and its markdown table side by side,
into a scratch folder unless the run is meant to update the committed results.

Where results go: ``--out`` when given; else ``benchmarks/results/`` (the measured files the docs quote,
under version control) with ``--update-results``; else the scratch folder ``runs/benchmarks/`` of the
working folder (git-ignored), so a trial run never overwrites a committed measurement. Every script
prints the path it wrote."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from metakd.atomic import atomic_write as _atomic_write

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"  # committed measurements: written only when asked
SCRATCH_DIR = Path("runs") / "benchmarks"  # the default: git-ignored, relative to the working folder


def add_update_results_flag(parser: argparse.ArgumentParser) -> None:
    """``--update-results``: write into benchmarks/results/ instead of the scratch folder."""
    parser.add_argument("--update-results", action="store_true",
                        help=f"write into {RESULTS_DIR} (the committed results the docs quote) instead of the "
                             f"scratch folder {SCRATCH_DIR}/; --out wins over both")


def output_dir(update_results: bool) -> Path:
    """The folder a result goes to when ``--out`` is not given (see the module docstring)."""
    return RESULTS_DIR if update_results else SCRATCH_DIR


def output_path(out, name: str, update_results: bool) -> Path:
    """``out`` when given, else ``name`` in ``output_dir(update_results)``."""
    return Path(out) if out else output_dir(update_results) / name


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` atomically (``metakd.atomic``), so a reader never sees half a file."""
    _atomic_write(path, text, what="benchmark result")


def write_json_and_markdown(out: Path, report: dict, markdown: str) -> None:
    """``report`` as ``out`` (JSON) and ``markdown`` as the same name with .md."""
    out = Path(out)
    write_atomic(out, json.dumps(report, indent=2))
    write_atomic(out.with_suffix(".md"), markdown)
    print(f"written {out} and {out.with_suffix('.md')}")


def run_piece(work: Path, name: str, fn) -> dict:
    """Piece ``name`` of a resumable study: its JSON in ``work/pieces/`` when it finished before, else
    ``fn()`` computed, timed (``seconds``) and written atomically, so a killed study keeps what it finished.
    One process per piece: a second study computing the same piece meanwhile gets one error naming the
    holder (an OS lock on ``pieces/.<name>.lock``, released by the kernel if the holder dies)."""
    import time

    from metakd.engine.runs.lock import hold

    path = Path(work) / "pieces" / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    with hold(path.parent / f".{name}.lock", f"the study piece {name!r} in {work}"):
        if path.is_file():  # finished by another process while this one started
            return json.loads(path.read_text())
        print(f"[running] {name}", flush=True)
        tic = time.perf_counter()
        res = fn()
        res["seconds"] = time.perf_counter() - tic
        write_atomic(path, json.dumps(res))
    return res


def paired_over_seeds(a: dict, b: dict):
    """a − b on shared fixed episodes, given per-episode accuracies by seed ({seed: [..]}); None without a
    common seed. ``seed_level``: the paired t test over the per-seed mean differences (n_seeds − 1 dof), the
    only statement about the methods; ``within_seed``: each seed's per-episode paired interval (one
    trained pair of models). Seeds x episodes are never pooled: the same episodes evaluated once per seed
    are not independent samples (``metakd.stats``)."""
    from metakd.stats import seed_level_paired

    common = sorted(set(a) & set(b))
    if not common:
        return None
    res = seed_level_paired({s: a[s] for s in common}, {s: b[s] for s in common})
    return {"seeds": common, "seed_level": res["seed_level"],
            "within_seed": {s: {k: d[k] for k in ("mean", "ci", "p", "n", "a_better", "b_better", "level")} for s, d in res["within_seed"].items()}}


def restat_paired(stored):
    """A stored ``paired_over_seeds`` result (this version's, or an older one with ``per_seed`` and a pooled
    p) recomputed with this version's statistics from its per-seed mean differences; the pooled entry is
    dropped (it cannot be recomputed, and it over-claims). None stays None."""
    from metakd.stats import seed_level_test

    if not stored:
        return None
    within = stored.get("within_seed") or stored["per_seed"]
    seeds = [int(s) for s in within]
    within = {int(s): {**d, "level": "within-seed"} for s, d in within.items()}
    return {"seeds": seeds, "seed_level": seed_level_test([within[s]["mean"] for s in seeds]), "within_seed": within}


def add_holm(entries) -> int:
    """Holm's correction over one table's family of comparisons. ``entries``: (key, paired result or None);
    a key given twice (the same comparison shown as a − b and b − a) counts once. Writes ``p_holm`` and
    ``holm_m`` (the family size) into each result's ``seed_level``; returns the family size."""
    from metakd.stats import holm_adjust

    unique = {}
    for key, d in entries:
        if d and d["seed_level"]["p"] == d["seed_level"]["p"]:
            unique.setdefault(key, d["seed_level"]["p"])
    keys = list(unique)
    adjusted = dict(zip(keys, holm_adjust([unique[k] for k in keys])))
    for key, d in entries:
        if d:
            d["seed_level"].update(p_holm=adjusted.get(key, float("nan")), holm_m=len(keys))
    return len(keys)


def _p(p) -> str:
    return "n/a" if p is None or p != p else f"{p:.2g}"


def format_paired(d) -> str:
    """``paired_over_seeds``'s result as one table cell (points): the seed-level mean ± Student-t 95% CI,
    its p (n_seeds − 1 dof) and, when ``add_holm`` ran, Holm's adjusted p (bold where <= 0.05)."""
    from metakd.stats import format_interval

    if not d:
        return "–"
    o = d["seed_level"]
    text = f"{'+' if o['mean'] >= 0 else ''}{format_interval(o['mean'], o['ci'])} (p {_p(o['p'])}"
    if "p_holm" in o:
        q = o["p_holm"]
        holm = f"Holm {_p(q)}"
        text += f", **{holm}**" if q == q and q <= 0.05 else f", {holm}"
    return text + ")"


SEED_LEVEL_NOTE = ("Differences (points): mean over seeds of the per-seed mean paired differences ± Student-t 95% CI, "
                   "p of the paired t test over seeds (n_seeds − 1 degrees of freedom) and Holm's adjusted p over "
                   "the {m} distinct comparisons of this table (bold: <= 0.05). Per-episode paired intervals are "
                   "within one seed (one trained pair of models) and are in the JSON (``within_seed``); seeds x "
                   "episodes are not pooled, since the same episodes evaluated once per seed are not independent samples.")


def run_seed_major(work: Path, seeds, cells, piece) -> None:
    """Every (cell, seed) piece of a study, seed-major (a cut study has whole seeds): ``piece(cell, seed)``
    through ``run_piece`` under the name ``<cell>_s<seed>``."""
    for seed in seeds:
        for cell in cells:
            run_piece(work, f"{cell}_s{seed}", lambda c=cell, s=seed: piece(c, s))


def publish(out: Path, report: dict, markdown: str) -> None:
    """The study's JSON and markdown written side by side (``write_json_and_markdown``), the table printed."""
    write_json_and_markdown(out, report, markdown)
    print(markdown)


def add_study_flags(parser: argparse.ArgumentParser, name: str) -> None:
    """--report-only, --out and --update-results of a resumable study whose result file is ``name``."""
    parser.add_argument("--report-only", action="store_true", help="tables from the finished pieces, no training")
    parser.add_argument("--out", help=f"result file (default: {SCRATCH_DIR}/{name})")
    add_update_results_flag(parser)


def run_study(args: argparse.Namespace, piece, report, markdown, name: str) -> dict:
    """A resumable study at one torch thread: its pieces (``run_seed_major`` over args.seeds x args.cells,
    unless --report-only), then ``report(work, args)`` published as ``name`` (or --out)."""
    import torch

    torch.set_num_threads(1)
    work = Path(args.work)
    if not args.report_only:
        run_seed_major(work, args.seeds, args.cells, lambda cell, seed: piece(cell, seed, args))
    rep = report(work, args)
    publish(output_path(args.out, name, args.update_results), rep, markdown(rep))
    return rep


def load_pieces(work: Path) -> dict:
    """The finished pieces of a study as {cell: {seed: piece}} (pieces carrying "cell" and "seed")."""
    out: dict = {}
    for f in sorted((Path(work) / "pieces").glob("*.json")):
        p = json.loads(f.read_text())
        out.setdefault(p["cell"], {})[p["seed"]] = p
    return out
