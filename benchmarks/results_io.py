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

RESULTS_DIR = Path(__file__).resolve().parent / "results"  # committed measurements: written only when asked
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
    """a − b on shared fixed episodes, given per-episode accuracies by seed ({seed: [..]}): per seed, the
    Student-t interval over the per-seed mean differences, and pooled over all seeds' episodes; None
    without a common seed."""
    from metakd.stats import paired_difference, t_interval

    common = sorted(set(a) & set(b))
    if not common:
        return None
    per = {s: paired_difference(a[s], b[s]) for s in common}
    return {"seeds": common, "per_seed": {s: {k: d[k] for k in ("mean", "ci", "p")} for s, d in per.items()},
            "over_seeds": t_interval([per[s]["mean"] for s in common]) if len(common) > 1 else None,
            "pooled": paired_difference([v for s in common for v in a[s]], [v for s in common for v in b[s]])}


def format_paired(d) -> str:
    """``paired_over_seeds``'s result as one table cell (points)."""
    from metakd.stats import format_interval

    if not d:
        return "–"
    o = d["over_seeds"]
    return (f"{format_interval(o['mean'], o['ci']) if o else 'n/a'} "
            f"(pooled {format_interval(d['pooled']['mean'], d['pooled']['ci'])}, p {d['pooled']['p']:.2g})")
