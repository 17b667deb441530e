"""KD vs KD + Kendall rank loss vs KD + meta-learned temperatures (MKD), same budget, several seeds.

Default: the built-in glyph dataset (no download), CPU-sized: the first 30 classes of the glyph train
split at 16x16, 16 training / 4 test instances per class, teacher wrn_16_2 trained once (seed 0) and
shared, student resnet20 trained per method and seed for the same number of epochs. A "ce" row is the
student without a teacher (CE only), as the reference every distillation method must beat.
With --root pointing at CIFAR-100 (cifar-100-python/), the same comparison on CIFAR-100 with the
shipped configs' settings (override --epochs etc. to fit a budget).

Reports final test top-1 per run, mean ± std (ddof=1) over seeds and a 95% CI of the mean
(Student t, n-1 degrees of freedom), as JSON and a markdown table: distill_glyphs_cpu.{json,md} in
runs/benchmarks/ (benchmarks/results/ with --update-results, or --out FILE).

    python benchmarks/distill_glyphs.py                       # ~15 min on a 2-core CPU
    python benchmarks/distill_glyphs.py --seeds 0 1 2 3 4 --epochs 20
    python benchmarks/distill_glyphs.py --root /data/cifar --device cuda --epochs 240 --teacher-epochs 240
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from metakd.atomic import atomic_write, write_json  # noqa: E402
from metakd.engine.training.job_config import load_distill_config  # noqa: E402
from metakd.stats import t_interval  # noqa: E402
from metakd.engine.training.distill import run_distill  # noqa: E402
from benchlib.results import add_update_results_flag, output_path  # noqa: E402

METHODS = {
    "ce": ["distill.method=kd", "distill.ce_weight=1.0", "distill.kd_weight=0.0"],
    "kd": ["distill.method=kd"],
    "kd_rank": ["distill.method=kd_rank"],
    "mkd": ["distill.method=mkd"],
}


def summarize(values):
    """Mean, std (ddof 1) and Student-t 95% half-width over seeds (``metakd.stats.t_interval``)."""
    r = t_interval(values)
    return {"mean": r["mean"], "std": r["std"], "ci95": r["ci"], "n": r["n"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", help="CIFAR-100 root (cifar-100-python/); default: the built-in glyphs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--teacher-epochs", type=int, default=15)
    ap.add_argument("--classes", type=int, default=30, help="glyphs: number of classes")
    ap.add_argument("--image-size", type=int, default=16, help="glyphs: image side")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="runs/bench_distill", help="run folders")
    ap.add_argument("--out", help="result JSON (default: runs/benchmarks/distill_glyphs_cpu.json)")
    add_update_results_flag(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.root:
        base = "distill_cifar100_resnet32x4_resnet8x4_kd"
        common = [f"data.root={args.root}", f"train.epochs={args.epochs}", f"teacher.epochs={args.teacher_epochs}"]
        if args.epochs < 240:
            m = [int(args.epochs * f) for f in (0.625, 0.75, 0.875)]
            common.append(f"train.lr_milestones={sorted(set(x for x in m if x > 0))}")
    else:
        base = "distill_glyphs_kd"
        e = args.epochs
        common = [f"data.max_classes={args.classes}", f"data.image_size={args.image_size}", f"train.epochs={e}",
                  f"teacher.epochs={args.teacher_epochs}", f"train.lr_milestones={[max(1, int(e * 0.67)), max(2, int(e * 0.9))]}",
                  f"teacher.lr_milestones={[max(1, int(args.teacher_epochs * 0.67)), max(2, int(args.teacher_epochs * 0.9))]}",
                  "train.log_every=1000"]
    common += [f"device={args.device}", f"threads={args.threads}"]
    work = Path(args.work)
    teacher_dir = work / "teacher_run"
    teacher_pt = teacher_dir / "teacher" / "teacher.pt"
    start = time.perf_counter()
    if not teacher_pt.exists():
        cfg = load_distill_config(base, common + ["seed=0", "train.epochs=1"] + METHODS["ce"])
        # train the teacher only: the 1-epoch student of this call is discarded
        run_distill(cfg, teacher_dir, resume=(teacher_dir / "teacher" / "last.pt").exists(), progress=False)
    teacher_acc = json.loads((teacher_dir / "teacher" / "result.json").read_text())["test_acc"]
    print(f"teacher: test top-1 {100 * teacher_acc:.2f}% ({time.perf_counter() - start:.0f}s)", flush=True)
    runs = []
    for seed in args.seeds:
        for method in args.methods:
            out = work / f"{method}_seed{seed}"
            cfg = load_distill_config(base, common + METHODS[method] + [f"seed={seed}", f"teacher.checkpoint={teacher_pt}"])
            tic = time.perf_counter()
            done = (out / "result.json").exists()
            res = json.loads((out / "result.json").read_text()) if done else run_distill(
                cfg, out, resume=(out / "student" / "last.pt").exists(), progress=False)
            s = res["student"]
            row = {"method": method, "seed": seed, "test_acc": s["test_acc"], "best_test_acc": s["best_test_acc"],
                   "seconds": s["seconds"], "t_teacher": s.get("t_teacher"), "t_student": s.get("t_student")}
            runs.append(row)
            print(f"{method:8s} seed {seed}: {100 * s['test_acc']:.2f}% "
                  f"({time.perf_counter() - tic:.0f}s{', T_t %.2f T_s %.2f' % (row['t_teacher'], row['t_student']) if row['t_teacher'] else ''})",
                  flush=True)
    summary = {m: summarize([r["test_acc"] for r in runs if r["method"] == m]) for m in args.methods}
    result = {
        "benchmark": "distill_glyphs", "dataset": "cifar100" if args.root else "glyphs", "base_config": base,
        "overrides": common, "teacher": {"arch": cfg["teacher"]["arch"], "test_acc": teacher_acc},
        "student": cfg["student"]["arch"], "epochs": args.epochs, "seeds": args.seeds, "runs": runs,
        "summary": summary, "wall_seconds": time.perf_counter() - start,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"device {args.device}, {args.threads} threads (shared machine: timings are indicative only)",
    }
    lines = [f"| method | test top-1 % (mean ± std over {len(args.seeds)} seeds) | 95% CI (t) | per seed |",
             "|---|---|---|---|"]
    for m, s in summary.items():
        per = ", ".join(f"{100 * r['test_acc']:.2f}" for r in runs if r["method"] == m)
        lines.append(f"| {m} | {100 * s['mean']:.2f} ± {100 * s['std']:.2f} | ± {100 * s['ci95']:.2f} | {per} |")
    table = "\n".join(lines)
    result["markdown"] = table
    out = output_path(args.out, "distill_glyphs_cpu.json", args.update_results)
    write_json(out, result, what="benchmark result")
    atomic_write(out.with_suffix(".md"), f"Teacher {result['teacher']['arch']}: {100 * teacher_acc:.2f}%; student "
                                         f"{result['student']}, {args.epochs} epochs.\n\n{table}\n", what="benchmark result")
    print(table)
    print(f"written {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
