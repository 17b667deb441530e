"""A classification proxy where the teacher matters: CE only vs KD vs KD + rank vs MKD vs MKD + rank.

Data: the built-in glyphs (no download), the first ``--classes`` classes of the train split with
``--train-per-class`` training and ``--test-per-class`` test instances each (distinct font x distortion
draws; the generator's streams are prefix-stable, so instance i of a class is the same image whatever
count is asked for). Default 100 classes x (200 train + 50 test) at 16x16 (32x32 costs ~4x the CPU time:
``--image-size 32``). The teacher (resnet20, CE) is trained once and shared by every student; the
student (Conv4 with 16 channels, ~9k parameters) is small enough that it stays clearly below the
teacher when trained alone, which is the regime where distillation can show an effect.

Protocol:

- Every method and seed uses the same student initialisation (the engine seeds the student with
  ``seed`` before building it), the same epoch order of the training images and the same
  augmentation draws; MKD's held-out batch is drawn from the training set (``mkd.heldout=train``,
  ``--mkd-heldout split`` sets 10 % of every class aside instead, which changes MKD's training set).
- Rank-loss settings (subset all / top / bottom, tanh sharpness k, rank weight) are chosen on a
  held-out part of the TRAINING data, never on test images: selection runs train on the first
  ``train - val`` training instances of every class and are scored on the last ``--val-per-class``
  training instances (the test instances are not even generated for them). The search is
  coordinate-wise: subset at (k = 100, w = kd_weight), then k for the best subset, then the weight;
  a KD run on the same split is the reference. Ties keep the earlier (default) value.
- Results: final test top-1 per (method, seed); mean ± Student-t 95% interval over seeds
  (``metakd.stats.t_interval``) and the difference to KD at seed level (``metakd.stats.seed_level_test``
  over the per-seed differences, n_seeds − 1 dof) with Holm's adjusted p over the comparisons to KD.
- Deviation from MKD's paper, printed under the table: with ``mkd.heldout=train`` (the default) the
  meta-objective is the CE on another batch of the training set, not on held-out data.
- Resumable: each (method, seed) piece and each selection piece is written atomically to
  ``<work>/pieces/<name>.json`` as it finishes and skipped on a rerun; a piece cut half-way resumes
  from its last.pt. The teacher likewise. Total CPU time = the sum over pieces (whichever invocation
  ran them), with the load average and the command of each invocation.

Cost (2-core x86 box, 1 torch thread, measured pieces + per-step costs): teacher 250 CPU-s; per seed
ce ~110, kd ~110, kd_rank ~150, mkd ~280, mkd_rank ~315 CPU-s; 8 selection runs ~1,000 CPU-s; the
default plan (5 seeds) ~1.8 CPU-hours. ``--only report`` writes the result and the projection of the
planned run from what is finished, running nothing.

    python benchmarks/distill_proxy.py                          # the full run
    python benchmarks/distill_proxy.py --only teacher           # one part at a time (each part resumable)
    python benchmarks/distill_proxy.py --only select
    python benchmarks/distill_proxy.py --only seed0 seed1
    python benchmarks/distill_proxy.py --only report
    python benchmarks/distill_proxy.py --smoke                  # tiny sizes, into runs/distill_proxy_smoke
    python benchmarks/distill_proxy.py --restat benchmarks/results/distill_proxy_cpu.json --update-results
                                                                # only the statistics of a written result, again
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchlib.distill import cpu_seconds, ensure_teacher, fmt, machine, milestones, run_piece  # noqa: E402
from metakd.atomic import atomic_write, write_json  # noqa: E402
from metakd.stats import holm_adjust, seed_level_test, t_interval  # noqa: E402
from benchlib.results import add_update_results_flag, output_path  # noqa: E402

BASE = "distill_glyphs_kd"
METHODS = ("ce", "kd", "kd_rank", "mkd", "mkd_rank")
SUBSETS = ("all", "top", "bottom")


def glyph_overrides(args, instances: int, holdout: int) -> List[str]:
    """Data + model + schedule overrides shared by every run (instances / holdout: per class)."""
    total = math.ceil(args.classes / 0.64) + 1  # the glyph loader's num_classes counts all three splits
    return [
        "data.dataset=glyphs", f"data.image_size={args.image_size}", f"data.max_classes={args.classes}",
        f"data.options.num_classes={total}", f"data.options.instances_per_class={instances}",
        f"data.holdout_per_class={holdout}", f"data.crop_padding={max(1, args.image_size // 14)}",
        f"teacher.arch={args.teacher_arch}", f"teacher.epochs={args.teacher_epochs}",
        f"teacher.lr_milestones={milestones(args.teacher_epochs)}",
        f"student.arch={args.student_arch}", *[f"student.options.{kv}" for kv in args.student_options],
        f"train.epochs={args.epochs}", f"train.lr_milestones={milestones(args.epochs)}",
        f"train.batch_size={args.batch_size}", "train.eval_batch_size=1000", "train.log_every=100000",
        f"device={args.device}", f"threads={args.threads}",
    ]


def method_overrides(method: str, rank: Dict[str, Any], args) -> List[str]:
    if method == "ce":
        return ["distill.method=kd", "distill.ce_weight=1.0", "distill.kd_weight=0.0"]
    out = [f"distill.method={method}"]
    if method.endswith("rank"):
        out += [f"distill.rank_subset={rank['subset']}", f"distill.rank_k={rank['k']}",
                f"distill.rank_weight={rank['weight']}", f"distill.rank_fraction={args.rank_fraction}"]
    if method.startswith("mkd"):
        out += [f"mkd.heldout={args.mkd_heldout}"]
    return out


def rank_tag(r: Dict[str, Any]) -> str:
    return f"rank_{r['subset']}_k{r['k']:g}_w{r['weight']:g}"


def select_rank(args, work: Path, teacher_pt: str, log) -> Dict[str, Any]:
    """Coordinate-wise choice of (subset, k, weight) by validation top-1 on held-out training instances."""
    common = glyph_overrides(args, args.train_per_class, args.val_per_class) + [
        f"seed={args.select_seed}", f"teacher.checkpoint={teacher_pt}"]
    scores: Dict[str, float] = {}

    def score(method: str, r: Dict[str, Any]) -> float:
        name = f"select_{'kd' if method == 'kd' else rank_tag(r)}"
        if name not in scores:
            row = run_piece(name, BASE, common + method_overrides(method, r, args), work,
                            extra={"role": "select", "method": method, "epochs": args.epochs,
                                   "rank": None if method == "kd" else r})
            scores[name] = row["test_acc"]  # here "test" = the held-out TRAINING instances
            log(f"  select {name:32s} val top-1 {fmt(row['test_acc'])}%  ({row['cpu_seconds']:.0f} CPU-s)")
        return scores[name]

    kd_val = score("kd", {})
    best = {"subset": args.rank_subsets[0], "k": args.rank_ks[0], "weight": args.rank_weights[0]}
    for key, values in (("subset", args.rank_subsets), ("k", args.rank_ks), ("weight", args.rank_weights)):
        results = [(score("kd_rank", {**best, key: v}), -i, v) for i, v in enumerate(values)]
        best[key] = max(results)[2]  # highest val top-1; ties -> the earlier value
    return {"chosen": best, "val_top1": scores, "kd_val_top1": kd_val, "val_per_class": args.val_per_class,
            "train_per_class_in_selection": args.train_per_class - args.val_per_class, "seed": args.select_seed}


def summarize(runs: List[Dict[str, Any]], seeds: List[int], methods: List[str]) -> Tuple[Dict[str, Any], str]:
    """Per method: mean ± t95 over the seeds it has finished; the difference to KD at seed level over the seeds
    both have (paired t test over seeds, n − 1 dof), with Holm's adjusted p over the comparisons to KD."""
    acc = {m: {r["seed"]: r["test_acc"] for r in runs if r["method"] == m} for m in methods}
    summary: Dict[str, Any] = {}
    for m in methods:
        have = [s for s in seeds if s in acc[m]]
        if not have:
            continue
        vals = [acc[m][s] for s in have]
        summary[m] = {"per_seed": dict(zip(have, vals)), **t_interval(vals)}
        both = [s for s in have if s in acc.get("kd", {})]
        if m != "kd" and both:
            d = seed_level_test([acc[m][s] - acc["kd"][s] for s in both])
            summary[m]["paired_vs_kd"] = {**d, "seeds": both}
    tested = [m for m in summary if "paired_vs_kd" in summary[m]]
    ps = [summary[m]["paired_vs_kd"]["p"] for m in tested]
    for m, q in zip(tested, holm_adjust(ps)):
        summary[m]["paired_vs_kd"].update(p_holm=q, holm_m=sum(1 for p in ps if not math.isnan(p)))
    lines = ["| method | seeds | test top-1 % (mean ± t95) | per seed | Δ vs KD at seed level (mean ± t95) | p (t, n−1 dof) | "
             f"Holm p ({len(tested)} comparisons) | seeds better / worse than KD |", "|---|---|---|---|---|---|---|---|"]
    for m, e in summary.items():
        diff_txt, p_txt, q_txt, wl = "—", "—", "—", "—"
        d = e.get("paired_vs_kd")
        if d:
            diff_txt = f"{100 * d['mean']:+.2f} ± {fmt(d['ci'])}"
            p_txt = "n/a" if math.isnan(d["p"]) else f"{d['p']:.3f}"
            q_txt = "n/a" if math.isnan(d["p_holm"]) else f"{d['p_holm']:.3f}"
            wl = f"{d['a_better']} / {d['b_better']}"
        per = ", ".join(fmt(v) for v in e["per_seed"].values())
        lines.append(f"| {m} | {e['n']} | {fmt(e['mean'])} ± {fmt(e['ci'])} | {per} | {diff_txt} | {p_txt} | {q_txt} | {wl} |")
    return summary, "\n".join(lines)


def deviations(settings: Dict[str, Any]) -> List[str]:
    """What departs from the papers, printed under the table."""
    out = []
    if any(m.startswith("mkd") for m in settings["methods"]) and settings.get("mkd_heldout", "train") == "train":
        out.append("MKD's meta-objective here is the CE on another batch of the training set (`mkd.heldout=train`), "
                   "not on held-out data as in the paper (`--mkd-heldout split` holds 10% of every class out).")
    return out


def headline(settings: Dict[str, Any], teacher: Dict[str, Any], rank: Dict[str, Any], selected: bool,
             cpu_total: float, proj: Dict[str, Any]) -> str:
    """The sentence above the table."""
    a = settings
    return (f"Glyphs proxy: {a['classes']} classes at {a['image_size']}x{a['image_size']}, {a['train_per_class']} train / "
            f"{a['test_per_class']} test instances per class; teacher {teacher['arch']} {a['teacher_epochs']} epochs: "
            f"{fmt(teacher['test_acc'])}%; student {a['student_arch']} ({' '.join(a['student_options'])}), "
            f"{a['epochs']} epochs, seeds {a['seeds']}. Rank settings: {rank} "
            f"({'chosen on held-out training instances' if selected else 'defaults; the selection has not run'}). "
            f"CPU time so far {cpu_total / 60:.1f} min; full plan projected {proj['cpu_hours']:.2f} CPU-h.\n\n")


def table_markdown(report: Dict[str, Any]) -> str:
    """Headline, table, deviations (and how the statistics were made, when recomputed)."""
    tail = [f"- {d}" for d in deviations(report["settings"])]
    text = headline(report["settings"], report["teacher"], report["rank_used"], bool(report["rank_selection"]),
                    report["cpu_seconds_total"], report["cpu_seconds_projected_full_plan"]) + report["markdown"] + "\n"
    if tail:
        text += "\nDeviations from the papers:\n" + "\n".join(tail) + "\n"
    if report.get("statistics"):
        text += f"\nStatistics {report['statistics']}.\n"
    return text


def restat(source: Path, out: Path) -> None:
    """The summary and table of a written result recomputed from its stored runs (seed level, Holm)."""
    report = json.loads(Path(source).read_text())
    st = report["settings"]
    report["summary"], report["markdown"] = summarize(report["runs"], st["seeds"], st["methods"])
    report["deviations"] = deviations(st)
    report["statistics"] = ("recomputed by `benchmarks/distill_proxy.py --restat` from the stored per-seed test "
                            "accuracies (seed-level paired t test, Holm over the comparisons to KD)")
    write_json(out, report, what="benchmark result")
    atomic_write(out.with_suffix(".md"), table_markdown(report), what="benchmark table")
    print(table_markdown(report))
    print(f"written {out}")


def step_costs(args, work: Path) -> Dict[str, float]:
    """CPU seconds of one training step of each method at the planned sizes (random images; 3 warm-up
    steps, then the mean of 8), cached in ``<work>/step_costs.json``. Used to project a full run's CPU
    time from a smoke run."""
    path = work / "step_costs.json"
    if path.exists():
        cached = json.loads(path.read_text())
        if "teacher" in cached:
            return cached
    import torch.nn.functional as F

    from metakd.distill import MetaTemperatures, kd_loss, mkd_step, rank_loss
    from metakd.models import build_backbone

    opts = {k: (int(v) if v.isdigit() else v) for k, v in (kv.split("=", 1) for kv in args.student_options)}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 1, args.image_size, args.image_size, generator=g)
    y = torch.randint(0, args.classes, (args.batch_size,), generator=g)
    teacher = build_backbone(args.teacher_arch, args.classes, in_channels=1, image_size=args.image_size).eval()
    out: Dict[str, float] = {}
    for m in METHODS:
        torch.manual_seed(0)
        student = build_backbone(args.student_arch, args.classes, in_channels=1, image_size=args.image_size, **opts)
        opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
        temps = MetaTemperatures(4.0, 4.0)
        topt = torch.optim.Adam(temps.parameters(), lr=0.01)
        rank = {"subset": "all", "k": 100.0}
        times = []
        for i in range(11):
            t0 = cpu_seconds()
            if m == "ce":
                loss = F.cross_entropy(student(x), y)
            else:
                with torch.no_grad():
                    t = teacher(x)
            if m.startswith("mkd"):
                mkd_step(student, t, (x, y), (x, y), temps, opt, topt, 0.01,
                         rank_weight=0.9 if m.endswith("rank") else 0.0, rank_kwargs=rank)
            else:
                if m != "ce":
                    s = student(x)
                    loss = 0.1 * F.cross_entropy(s, y) + 0.9 * kd_loss(s, t, 4.0)
                    if m == "kd_rank":
                        loss = loss + 0.9 * rank_loss(s, t, **rank)
                opt.zero_grad()
                loss.backward()
                opt.step()
            if i >= 3:
                times.append(cpu_seconds() - t0)
        out[m] = sum(times) / len(times)
    teacher.train()
    opt = torch.optim.SGD(teacher.parameters(), lr=0.01, momentum=0.9)
    times = []
    for i in range(11):
        t0 = cpu_seconds()
        loss = F.cross_entropy(teacher(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(cpu_seconds() - t0)
    out["teacher"] = sum(times) / len(times)
    write_json(path, out, what="step costs")
    return out


def projection(pieces: List[Dict[str, Any]], teacher: Dict[str, Any], plan: List[Tuple[str, str, int, int]],
               teacher_plan: Tuple[int, int], costs: Dict[str, float], batch: int) -> Dict[str, Any]:
    """CPU seconds of the planned run: finished pieces as measured; the others as steps x (their method's
    step cost from ``step_costs`` + the mean per-step overhead of the finished pieces: evaluation, data
    loading, augmentation, logging, the machine's load; 0 when none is finished)."""
    def steps(images: int, epochs: int) -> int:
        return epochs * (images // batch + (1 if images % batch >= 2 else 0))

    done = {p["name"]: p for p in pieces}
    extra = [p["cpu_seconds"] / p["steps"] - costs[p["method"]] for p in pieces if p.get("steps")]
    overhead = max(0.0, sum(extra) / len(extra)) if extra else 0.0
    if teacher.get("epochs") == teacher_plan[1]:
        total = teacher["cpu_seconds"]
        measured = total
    else:
        total, measured = (costs["teacher"] + overhead) * steps(*teacher_plan), 0.0
    for name, method, images, epochs in plan:
        if name in done:
            total += done[name]["cpu_seconds"]
            measured += done[name]["cpu_seconds"]
        else:
            total += (costs[method] + overhead) * steps(images, epochs)
    return {"cpu_seconds": total, "cpu_hours": total / 3600, "measured_part_cpu_seconds": measured,
            "step_cost_cpu_seconds": costs, "overhead_cpu_seconds_per_step": overhead,
            "pieces_planned": len(plan), "pieces_finished": sum(1 for n, *_ in plan if n in done)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--train-per-class", type=int, default=200)
    ap.add_argument("--test-per-class", type=int, default=50)
    ap.add_argument("--val-per-class", type=int, default=40, help="held out of the TRAINING instances for selection")
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--teacher-arch", default="resnet20")
    ap.add_argument("--teacher-epochs", type=int, default=12)
    ap.add_argument("--student-arch", default="conv4")
    ap.add_argument("--student-options", nargs="*", default=["hidden=16", "bn=running"], metavar="KEY=VALUE")
    ap.add_argument("--epochs", type=int, default=15, help="student epochs (every method)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--mkd-heldout", default="train", choices=("train", "split"))
    ap.add_argument("--rank-subsets", nargs="+", default=list(SUBSETS), choices=SUBSETS)
    ap.add_argument("--rank-ks", type=float, nargs="+", default=[100.0, 10.0, 1.0])
    ap.add_argument("--rank-weights", type=float, nargs="+", default=[0.9, 0.3, 2.7], help="first = KD's weight")
    ap.add_argument("--rank-fraction", type=float, default=0.1, help="top / bottom fraction of the channels")
    ap.add_argument("--select-seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=None,
                    help="teacher | select | seed<N> | report ...: run only these parts (report: none, just write the result)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=None, help="default runs/distill_proxy (runs/distill_proxy_smoke with --smoke)")
    ap.add_argument("--out", default=None, help="result JSON (default runs/benchmarks/distill_proxy_<device>.json; "
                    "the work folder with --smoke)")
    add_update_results_flag(ap)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (10 classes, 1 epoch, 2 seeds, 2-value grid)")
    ap.add_argument("--restat", metavar="RESULT_JSON",
                    help="only recompute the statistics of a written result (seed level, Holm) and write it again")
    args = ap.parse_args()
    if args.restat:
        return restat(Path(args.restat), Path(args.out) if args.out
                      else output_path(None, Path(args.restat).name, args.update_results))
    if args.smoke:
        args.classes, args.train_per_class, args.test_per_class, args.val_per_class = 10, 24, 6, 6
        args.epochs, args.teacher_epochs, args.seeds = 1, 1, args.seeds[:2] if len(args.seeds) >= 2 else [0, 1]
        args.rank_subsets, args.rank_ks, args.rank_weights = args.rank_subsets[:2], args.rank_ks[:2], args.rank_weights[:2]
    if args.val_per_class >= args.train_per_class:
        ap.error("--val-per-class must be smaller than --train-per-class")
    kind = "cuda" if args.device.startswith("cuda") else args.device
    work = Path(args.work or ("runs/distill_proxy_smoke" if args.smoke else "runs/distill_proxy"))
    out = (Path(args.out) if args.out else work / f"distill_proxy_{kind}.json" if args.smoke
           else output_path(None, f"distill_proxy_{kind}.json", args.update_results))
    torch.set_num_threads(args.threads)
    only = None if args.only is None else set(args.only)
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    inv_path = work / "invocations.json"
    invocations = json.loads(inv_path.read_text()) if inv_path.exists() else []
    invocations.append({"command": " ".join([sys.executable] + sys.argv), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "load_average_start": list(os.getloadavg()), "machine": machine(args.device, args.threads)})
    write_json(inv_path, invocations, what="invocation log")

    def log(msg: str) -> None:
        print(msg, flush=True)

    # teacher: trained on all training instances, evaluated on the test instances
    full = glyph_overrides(args, args.train_per_class + args.test_per_class, args.test_per_class)
    n_train = args.classes * args.train_per_class
    full_batches = n_train // args.batch_size + (1 if n_train % args.batch_size >= 2 else 0)
    if only == {"report"} and not (work / "teacher_run" / "teacher_piece.json").exists():
        teacher = {"arch": args.teacher_arch, "test_acc": None, "cpu_seconds": 0.0, "epochs": None, "path": None}
        log("teacher not trained yet: the projection estimates it from step costs")
    else:
        teacher = ensure_teacher(BASE, full + ["seed=0", "train.epochs=1"], work / "teacher_run",
                                 args.teacher_epochs * full_batches)
        log(f"teacher {teacher['arch']}: test top-1 {fmt(teacher['test_acc'])}% ({teacher['cpu_seconds']:.0f} CPU-s)")
    if only is not None and only <= {"teacher"}:
        return

    selection = None
    if any(m.endswith("rank") for m in args.methods) and (only is None or "select" in only or
                                                           any(o.startswith("seed") for o in only)):
        selection = select_rank(args, work, teacher["path"], log)
        log(f"rank settings chosen on held-out training instances: {selection['chosen']}")
    rank = selection["chosen"] if selection else {"subset": "all", "k": 100.0, "weight": 0.9}

    for seed in args.seeds:
        if only is not None and f"seed{seed}" not in only:
            continue
        for m in args.methods:
            row = run_piece(f"{m}_seed{seed}", BASE,
                            full + [f"seed={seed}", f"teacher.checkpoint={teacher['path']}"] + method_overrides(m, rank, args),
                            work, extra={"role": "final", "method": m, "seed": seed, "epochs": args.epochs,
                                         "rank": rank if m.endswith("rank") else None})
            log(f"{m:9s} seed {seed}: test top-1 {fmt(row['test_acc'])}%  ({row['cpu_seconds']:.0f} CPU-s"
                + (f", T_t {row['t_teacher']:.2f} T_s {row['t_student']:.2f}" if row.get("t_teacher") else "") + ")")

    # gather every finished piece in the work folder (earlier invocations included)
    pieces = [json.loads(p.read_text()) for p in sorted((work / "pieces").glob("*.json"))] if (work / "pieces").exists() else []
    finals = [p for p in pieces if p.get("role") == "final" and p["seed"] in args.seeds and p["method"] in args.methods]
    summary, table = summarize(finals, args.seeds, args.methods)
    plan = [(f"{m}_seed{s}", m, n_train, args.epochs) for s in args.seeds for m in args.methods]
    n_sel = args.classes * (args.train_per_class - args.val_per_class)
    n_grid = 1 + len(args.rank_subsets) + len(args.rank_ks) - 1 + len(args.rank_weights) - 1
    sel_names = [p["name"] for p in pieces if p.get("role") == "select"]
    sel_names += [f"select_planned{i}" for i in range(max(0, n_grid - len(sel_names)))]
    plan += [(n, "kd" if n == "select_kd" else "kd_rank", n_sel, args.epochs) for n in sel_names]
    proj = projection(pieces, teacher, plan, (n_train, args.teacher_epochs), step_costs(args, work), args.batch_size)
    cpu_total = teacher["cpu_seconds"] + sum(p["cpu_seconds"] for p in pieces)
    invocations[-1].update({"cpu_seconds": cpu_seconds() - cpu0, "wall_seconds": time.perf_counter() - wall0,
                            "load_average_end": list(os.getloadavg())})
    write_json(inv_path, invocations, what="invocation log")
    report = {
        "benchmark": "distill_proxy", "smoke": args.smoke, "settings": vars(args),
        "data": {"dataset": "glyphs", "classes": args.classes, "image_size": args.image_size,
                 "train_per_class": args.train_per_class, "test_per_class": args.test_per_class,
                 "train_images": n_train, "test_images": args.classes * args.test_per_class},
        "overrides_final": full, "teacher": teacher, "rank_selection": selection, "rank_used": rank,
        "runs": sorted(finals, key=lambda r: (r["seed"], METHODS.index(r["method"]))), "summary": summary,
        "complete": all(any(r["method"] == m and r["seed"] == s for r in finals) for m in args.methods for s in args.seeds),
        "cpu_seconds_total": cpu_total, "cpu_seconds_projected_full_plan": proj,
        "invocations": invocations, "device": args.device, "machine": machine(args.device, args.threads),
        "load_average_end": list(os.getloadavg()), "markdown": table,
    }
    report["deviations"] = deviations(report["settings"])
    write_json(out, report, what="benchmark result")
    atomic_write(out.with_suffix(".md"), table_markdown(report), what="benchmark table")
    log(table)
    log(f"written {out} (CPU so far {cpu_total:.0f} s; projected full plan {proj['cpu_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
