"""Classic teacher -> student distillation on real handwriting, where soft labels should matter: Omniglot's
minimal sets as a 242-way classification task with few drawers per character.

Data (``distill_omniglot_minimal_*`` configs): the characters of both minimal background sets (242 of 8
alphabets, 20 drawers each; 28x28). Per character, drawers in file order: 1-10 train, 11-14 validation,
15-20 test, so every test image is by a person whose drawing of that character was never seen. Two data
sizes (``--sizes``): ``full`` (10 training drawers, 2,420 images) and ``scarce`` (drawers 1-3, 726 images),
with the same validation and test drawers.

Teacher: resnet20 (0.29 M parameters) trained once per size on that size's training drawers (seed 0) and
shared by every student of that size. Student: Conv4-32 (36 k parameters), 30 epochs of SGD, the same
initialisation and batch order per seed for every method (MKD's look-ahead holds 10% of each class out
of the student's steps, so its order differs). Methods (weights as the configs: CE 0.1, KD 0.9, T 4):

  ce              the student alone (CE only)
  kd              CE + KD
  kd_rank         CE + KD + Kendall rank loss over all classes (RKKD; rank weight = KD weight)
  kd_rank_top     ... rank loss over the teacher's top 10% classes only
  kd_rank_bottom  ... over its bottom 10% only
  rank            CE + rank loss (no KD)
  mkd             CE + KD with meta-learned teacher / student temperatures (MKD look-ahead)
  mkd_rank        MKD + the rank loss
  mkd_shared      MKD with one learned temperature for teacher and student (a control, not run by default)
  mkd_alltrain    MKD whose meta-objective batch comes from the training images (mkd.heldout=train), so the student
                  trains on every image as KD does (the default holds out 10% of each class: a control, not default)

Selection (validation drawers only, seed 0, ``full``): the rank loss's sharpness k among ``K_GRID``
(the paper's fixed k = 100, and k = 1 / 3 / 10 divided by each row's logit std); the chosen k is used by
every rank method at both sizes. Nothing else is tuned: the remaining settings are the configs'.

Reported per size: test top-1 (1,452 test images) mean over seeds ± Student-t 95% CI, each seed's value,
validation accuracy, and the paired per-item difference to ``ce`` and to ``kd`` at seed level (paired t
test over the per-seed mean differences, n_seeds − 1 dof) with Holm's correction over the table's
comparisons; each seed's per-item interval (within that seed) is in the JSON.

Resumable pieces under --work (``benchlib.distill``): a killed run keeps finished pieces and a
half-trained student resumes from its last.pt.

    .venv/bin/python benchmarks/distill_omniglot.py --root data/omniglot --work runs/distill_omniglot
    .venv/bin/python benchmarks/distill_omniglot.py --root data/omniglot --work runs/distill_omniglot --report-only

Writes distill_omniglot_cpu.{json,md} into runs/benchmarks/ (benchmarks/results/ with --update-results,
or --out FILE).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from metakd.engine.assembly import describe_device  # noqa: E402
from metakd.engine.training.supervised import batches_per_epoch  # noqa: E402
from metakd.stats import format_interval, t_interval  # noqa: E402
from benchlib.distill import ensure_teacher, run_piece  # noqa: E402
from benchlib.results import (SEED_LEVEL_NOTE, add_holm, add_update_results_flag, format_paired, output_path,  # noqa: E402
                              write_atomic,
                              paired_over_seeds, write_json_and_markdown)

BASE = "distill_omniglot_minimal_kd"
SIZES = {"full": [], "scarce": ["data.train_per_class=3"]}
TRAIN_IMAGES = {"full": 2420, "scarce": 726}  # 242 characters x training drawers
RANK = ["distill.method=kd_rank"]
METHODS = {
    "ce": ["distill.method=kd", "distill.ce_weight=1.0", "distill.kd_weight=0.0"],
    "kd": ["distill.method=kd"],
    "kd_rank": RANK,
    "kd_rank_top": RANK + ["distill.rank_subset=top"],
    "kd_rank_bottom": RANK + ["distill.rank_subset=bottom"],
    "rank": RANK + ["distill.kd_weight=0.0", "distill.rank_weight=0.9"],
    "mkd": ["distill.method=mkd"],
    "mkd_rank": ["distill.method=mkd_rank"],
    "mkd_shared": ["distill.method=mkd", "mkd.shared=true"],
    # MKD's default meta-objective holds out 10% of every class (1 of 10 images at the full size, 1 of 3 at the
    # scarce one) from the student's training; this control draws it from another training batch instead
    "mkd_alltrain": ["distill.method=mkd", "mkd.heldout=train"],
}
DEFAULT_METHODS = [m for m in METHODS if m not in ("mkd_shared", "mkd_alltrain")]
RANK_METHODS = ("kd_rank", "kd_rank_top", "kd_rank_bottom", "rank", "mkd_rank")
K_GRID = {
    "abs100": ["distill.rank_k_scale=absolute", "distill.rank_k=100"],
    "std1": ["distill.rank_k_scale=std", "distill.rank_k=1"],
    "std3": ["distill.rank_k_scale=std", "distill.rank_k=3"],
    "std10": ["distill.rank_k_scale=std", "distill.rank_k=10"],
}
TEACHER_EPOCHS = 60


def common(args: argparse.Namespace, size: str) -> List[str]:
    return [f"data.root={args.root}", "device=cpu", "threads=1", *SIZES[size], *args.override]


def teacher(args: argparse.Namespace, work: Path, size: str) -> Dict[str, Any]:
    steps = TEACHER_EPOCHS * batches_per_epoch(TRAIN_IMAGES[size], 64)
    return ensure_teacher(BASE, common(args, size) + ["seed=0", "train.epochs=1"], work / f"teacher_{size}", steps)


def piece_name(method: str, size: str, seed: int, k: List[str]) -> str:
    """The piece of a student; the selection's chosen run is kd_rank's full-size seed 0 (not run twice)."""
    if (method, size, seed) == ("kd_rank", "full", 0):
        return next(f"select_k_{n}" for n, o in K_GRID.items() if o == k)
    return f"{method}_{size}_s{seed}"


def student(args: argparse.Namespace, work: Path, size: str, method: str, seed: int, k: List[str],
            t: Dict[str, Any]) -> Dict[str, Any]:
    over = common(args, size) + METHODS[method] + (k if method in RANK_METHODS else []) + [
        f"seed={seed}", f"teacher.checkpoint={t['path']}"]
    row = run_piece(piece_name(method, size, seed, k), BASE, over, work)
    print(f"{method:15s} {size:6s} seed {seed}: val {100 * row['val_acc']:.2f}%  test {100 * row['test_acc']:.2f}%"
          f"  ({row['seconds']:.0f} s)", flush=True)
    return row


def select_k(args: argparse.Namespace, work: Path, t: Dict[str, Any]) -> Dict[str, Any]:
    """kd_rank on the full size, seed 0, each k of K_GRID: the best validation accuracy (ties: the first)."""
    vals = {}
    for name, k in K_GRID.items():
        over = common(args, "full") + METHODS["kd_rank"] + k + ["seed=0", f"teacher.checkpoint={t['path']}"]
        row = run_piece(f"select_k_{name}", BASE, over, work)
        vals[name] = row["val_acc"]
        print(f"select k {name}: val {100 * row['val_acc']:.2f}%", flush=True)
    chosen = max(K_GRID, key=lambda n: vals[n])
    return {"val_acc": vals, "chosen": chosen, "overrides": K_GRID[chosen]}


def table(size: str, rows: Dict[str, Dict[int, Dict[str, Any]]], seeds: List[int]) -> List[Dict[str, Any]]:
    out = []
    for method, per in rows.items():
        have = [s for s in seeds if s in per]
        if not have:
            continue
        acc = [per[s]["test_acc"] for s in have]
        item = lambda m: {s: rows[m][s]["test_correct"] for s in have if s in rows.get(m, {})}  # noqa: E731
        out.append({"method": method, "size": size, "seeds": have, "per_seed": acc,
                    "acc": t_interval(acc) if len(acc) > 1 else {"mean": acc[0], "ci": float("nan")},
                    "val_acc": [per[s]["val_acc"] for s in have],
                    "vs_ce": None if method == "ce" else paired_over_seeds(item(method), item("ce")),
                    "vs_kd": None if method == "kd" else paired_over_seeds(item(method), item("kd")),
                    "train_seconds": sum(per[s]["seconds"] for s in have) / len(have),
                    "temperatures": {s: [per[s]["t_teacher"], per[s]["t_student"]] for s in have
                                     if per[s].get("t_teacher") is not None}})
    return out


def markdown(rep: Dict[str, Any]) -> str:
    lines = [f"`{rep['command']}`", "", f"{rep['device']}; load average at the end {rep['load_average']}.", "",
             "242-way classification of Omniglot characters (both minimal sets); test = drawers 15-20 (1,452 images), "
             "validation = drawers 11-14. Student Conv4-32, 30 epochs; teacher resnet20, 60 epochs, per size. "
             f"Rank sharpness chosen on validation: {rep['selection']['chosen']} "
             f"({', '.join(f'{k} {100 * v:.2f}%' for k, v in rep['selection']['val_acc'].items())}). "
             "Accuracy: mean over seeds ± Student-t 95% CI. " + SEED_LEVEL_NOTE.format(m=rep["holm_family"]), ""]
    for size in rep["sizes"]:
        t = rep["teachers"][size]
        lines += [f"**{size}** ({TRAIN_IMAGES[size]} training images): teacher {t['arch']} test "
                  f"{100 * t['test_acc']:.2f}%, val {100 * t['val_acc']:.2f}%.", "",
                  "| student | test top-1 (%) | per seed | val (%) | − ce | − kd | T_t / T_s | train s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rep["rows"]:
            if r["size"] != size:
                continue
            temps = "; ".join(f"{a:.2f}/{b:.2f}" for a, b in r["temperatures"].values()) or "–"
            lines.append(f"| {r['method']} | {format_interval(r['acc']['mean'], r['acc']['ci'])} | "
                         f"{', '.join(f'{100 * v:.2f}' for v in r['per_seed'])} | "
                         f"{', '.join(f'{100 * v:.2f}' for v in r['val_acc'])} | {format_paired(r['vs_ce'])} | "
                         f"{format_paired(r['vs_kd'])} | {temps} | {r['train_seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines) + f"CPU seconds of the finished pieces: {rep['cpu_seconds']:.0f}.\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="data/omniglot", help="folder with the official Omniglot zips")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS))
    p.add_argument("--override", nargs="*", default=[], help="key=value overrides for every run (changes the study)")
    p.add_argument("--work", default="runs/distill_omniglot")
    p.add_argument("--report-only", action="store_true", help="tables from the finished pieces, no training")
    p.add_argument("--out", help="result JSON (default: runs/benchmarks/distill_omniglot_cpu.json)")
    add_update_results_flag(p)
    args = p.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    start = time.perf_counter()
    teachers = {size: teacher(args, work, size) for size in args.sizes if not args.report_only
                or (work / f"teacher_{size}" / "teacher_piece.json").is_file()}
    if args.report_only:
        if not (work / "selection.json").is_file():
            raise SystemExit(f"{work}: no finished selection yet: run without --report-only first")
        selection = json.loads((work / "selection.json").read_text())
    else:  # the selection runs on the full size, whichever sizes this call trains
        selection = select_k(args, work, teachers.get("full") or teacher(args, work, "full"))
    write_atomic(work / "selection.json", json.dumps(selection))
    rows: List[Dict[str, Any]] = []
    for size in [s for s in args.sizes if s in teachers]:
        results: Dict[str, Dict[int, Dict[str, Any]]] = {}
        for seed in args.seeds:  # seed-major: a cut study has whole seeds
            for method in args.methods:
                path = work / "pieces" / f"{piece_name(method, size, seed, selection['overrides'])}.json"
                if args.report_only:
                    if path.is_file():
                        results.setdefault(method, {})[seed] = json.loads(path.read_text())
                    continue
                results.setdefault(method, {})[seed] = student(args, work, size, method, seed,
                                                               selection["overrides"], teachers[size])
        rows += table(size, results, args.seeds)
    holm = add_holm([((frozenset((r["method"], base)), r["size"]), r[key]) for r in rows
                     for key, base in (("vs_ce", "ce"), ("vs_kd", "kd"))])
    cpu = sum(json.loads(f.read_text()).get("cpu_seconds", 0) for f in (work / "pieces").glob("*.json"))
    cpu += sum(t.get("cpu_seconds", 0) for t in teachers.values())
    rep = {"benchmark": "distill_omniglot", "command": " ".join(["benchmarks/distill_omniglot.py", *sys.argv[1:]]),
           "device": describe_device(torch.device("cpu")), "load_average": [round(v, 2) for v in os.getloadavg()],
           "sizes": [s for s in args.sizes if s in teachers], "seeds": args.seeds, "selection": selection,
           "teachers": {s: {k: t[k] for k in ("arch", "test_acc", "val_acc", "epochs", "seconds")} for s, t in teachers.items()},
           "rows": [{k: v for k, v in r.items()} for r in rows], "holm_family": holm, "cpu_seconds": cpu,
           "wall_seconds_this_call": time.perf_counter() - start}
    md = markdown(rep)
    write_json_and_markdown(output_path(args.out, "distill_omniglot_cpu.json", args.update_results), rep, md)
    print(md)


if __name__ == "__main__":
    main()
