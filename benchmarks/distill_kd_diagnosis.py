"""Why KD < CE in the "classic distillation on the glyphs" table (docs/benchmarks-and-studies.md): cheap diagnostics, seed 0.

Setting: exactly benchmarks/distill_glyphs.py's (first 30 glyph train classes at 16x16, 16 train / 4 test
instances per class, teacher wrn_16_2 15 epochs, student resnet20, batch 64, lr 0.05, milestones at 67 / 90 %
of the epochs). Measured:

1. The teacher on its own *training* images: top-1, mean max-probability at T = 1 and T = 4 (how much
   "dark knowledge" its soft targets carry where the student is trained).
2. The student at initialisation (seed 0): norm of the logit gradient of CE alone vs 0.1·CE + 0.9·KD_T=4.
3. Student variants (each a resumable piece): CE only and KD at 10 epochs (the table's budget) and at
   40 epochs; KD with CE weight 1 + KD weight 1; KD at T = 1.

    python benchmarks/distill_kd_diagnosis.py                        # all variants (~6 CPU-minutes)
    python benchmarks/distill_kd_diagnosis.py --variants ce_e10 kd_e10
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchlib.distill import cpu_seconds, ensure_teacher, fmt, machine, milestones, run_piece  # noqa: E402
from benchlib.results import add_update_results_flag, output_path  # noqa: E402
from metakd.atomic import write_json  # noqa: E402
from metakd.distill import kd_loss  # noqa: E402
from metakd.engine.training.job_config import load_distill_config  # noqa: E402
from metakd.engine.training.distill_data import load_classification, prepare  # noqa: E402
from metakd.engine.training.distill import load_teacher  # noqa: E402
from metakd.models import build_backbone  # noqa: E402

BASE = "distill_glyphs_kd"
CE = ["distill.ce_weight=1.0", "distill.kd_weight=0.0"]


def schedule(epochs: int):
    return [f"train.epochs={epochs}", f"train.lr_milestones={milestones(epochs)}"]


VARIANTS = {
    "ce_e10": CE + schedule(10),
    "kd_e10": schedule(10),
    "ce_e40": CE + schedule(40),
    "kd_e40": schedule(40),
    "kd_ce1_kd1_e10": ["distill.ce_weight=1.0", "distill.kd_weight=1.0"] + schedule(10),
    "kd_T1_e10": ["distill.temperature=1.0", "mkd.t_min=0.5"] + schedule(10),
}


@torch.no_grad()
def teacher_probe(cfg, teacher_pt):
    data = load_classification(cfg)
    teacher, _ = load_teacher(Path(teacher_pt), cfg, data)
    x = prepare(data.train_x, data.mean, data.std, torch.device("cpu"))
    t = teacher(x)
    y = data.train_y
    out = {"train_top1": float((t.argmax(-1) == y).float().mean())}
    for T in (1.0, 4.0):
        p = F.softmax(t / T, -1)
        out[f"mean_max_prob_T{T:g}"] = float(p.max(-1).values.mean())
        out[f"mean_true_prob_T{T:g}"] = float(p.gather(1, y[:, None]).mean())
    torch.manual_seed(cfg["seed"])
    student = build_backbone(cfg["student"]["arch"], data.num_classes, in_channels=data.in_channels,
                             image_size=data.image_size)
    with torch.enable_grad():
        student.train()
        s = student(x[:256])
        s_leaf = s.detach().requires_grad_(True)
        ce = F.cross_entropy(s_leaf, y[:256])
        (g_ce,) = torch.autograd.grad(ce, s_leaf)
        mix = 0.1 * F.cross_entropy(s_leaf, y[:256]) + 0.9 * kd_loss(s_leaf, t[:256], 4.0)
        (g_mix,) = torch.autograd.grad(mix, s_leaf)
        true_ce = float(g_ce.gather(1, y[:256, None]).mean())
        true_mix = float(g_mix.gather(1, y[:256, None]).mean())
    out.update({"init_logit_grad_norm_ce": float(g_ce.norm()), "init_logit_grad_norm_kd_mix": float(g_mix.norm()),
                "init_true_class_grad_ce": true_ce, "init_true_class_grad_kd_mix": true_mix,
                "init_student_logit_std": float(s.std())})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--work", default="runs/distill_kd_diagnosis")
    ap.add_argument("--out", help="result JSON (default: runs/benchmarks/distill_kd_diagnosis_cpu.json; "
                    "the committed benchmarks/results/ with --update-results)")
    add_update_results_flag(ap)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    work = Path(args.work)
    common = ["data.max_classes=30", "data.image_size=16", "teacher.epochs=15", f"teacher.lr_milestones={milestones(15)}",
              "train.log_every=1000", "device=cpu", f"threads={args.threads}", "seed=0"]
    teacher_steps = 15 * 8  # 480 training images, batch 64 -> 8 steps per epoch (last batch of 32 kept)
    teacher = ensure_teacher(BASE, common + ["train.epochs=1"], work / "teacher_run", teacher_steps)
    cfg = load_distill_config(BASE, common + [f"teacher.checkpoint={teacher['path']}"])
    probe = teacher_probe(cfg, teacher["path"])
    print(f"teacher {fmt(teacher['test_acc'])}% test; probe {probe}", flush=True)
    rows = {}
    for v in args.variants:
        rows[v] = run_piece(v, BASE, common + [f"teacher.checkpoint={teacher['path']}"] + VARIANTS[v], work)
        r = rows[v]
        print(f"{v:16s} test {fmt(r['test_acc'])}%  final train acc {fmt(r['final_train_acc'])}%  "
              f"train loss {r['final_train_loss']:.3f}  ({r['cpu_seconds']:.0f} CPU-s)", flush=True)
    report = {"benchmark": "distill_kd_diagnosis", "command": " ".join([sys.executable] + sys.argv),
              "teacher": teacher, "teacher_probe": probe, "variants": {k: VARIANTS[k] for k in rows}, "runs": rows,
              "cpu_seconds_this_call": cpu_seconds() - cpu0, "wall_seconds_this_call": time.perf_counter() - wall0,
              "cpu_seconds_pieces": sum(r["cpu_seconds"] for r in rows.values()) + teacher["cpu_seconds"],
              "load_average_end": list(os.getloadavg()), "machine": machine("cpu", args.threads)}
    out = output_path(args.out, "distill_kd_diagnosis_cpu.json", args.update_results)
    write_json(out, report, what="benchmark result")
    print(f"written {out}")


if __name__ == "__main__":
    main()
