"""Gradient of the Kendall rank loss at few-shot (C = 5) and classification (C = 100) channel counts:
absolute tanh sharpness k vs the per-sample relative sharpness k / std(row) (``k_scale="std"``), and
the sigmoid (DiffKendall) form, on the constructed logits of
tests/test_distill_rank.py::test_rank_loss_moves_gradient_to_low_probability_channels, generalised to C:

    teacher t: the first ceil(C/10) channels at linspace(10, 6), the rest at linspace(0, -4)
    student s = scale * (t + noise * N(0, 1))      B = 256 rows, float64, seed 0
    noise 0.5 (the test's: nearly the teacher's order) and 3 (a student that still disagrees)

For each (C, noise, student scale, form/k/k_scale): the loss, the mean per-row norm of d loss / d s
(as if the loss were summed over rows), the share of pairs that still carry gradient
(tanh'(k_eff * Δs) > 0.01, i.e. |k_eff * Δs| < ~3) and the same share among the discordant pairs
(the ones the loss should fix). The KD (T = 4) gradient norm on the same logits is given for scale.
A few seconds of CPU.

    python benchmarks/distill_rank_sharpness.py       # -> runs/benchmarks/distill_rank_sharpness_cpu.json / .md
    python benchmarks/distill_rank_sharpness.py --update-results   # -> benchmarks/results/ (the committed file)
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import argparse  # noqa: E402

import torch  # noqa: E402

from metakd.atomic import atomic_write, write_json  # noqa: E402
from benchlib.results import add_update_results_flag, output_path  # noqa: E402
from metakd.distill import kd_loss, rank_loss  # noqa: E402
from metakd.distill.rank import standardize_scale  # noqa: E402

CHANNELS = (5, 100)
SCALES = (0.3, 1.0, 3.0)
NOISES = (0.5, 3.0)
SETTINGS = [
    ("tanh", "absolute", 100.0), ("tanh", "absolute", 10.0), ("tanh", "absolute", 1.0),
    ("tanh", "std", 100.0), ("tanh", "std", 10.0), ("tanh", "std", 5.0), ("tanh", "std", 3.0), ("tanh", "std", 1.0),
    ("sigmoid", "absolute", 1.0), ("sigmoid", "std", 1.0),
]
B = 256


def constructed(c: int, scale: float, noise: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = max(1, math.ceil(c / 10))
    t = torch.empty(B, c, dtype=torch.float64)
    t[:, :h] = torch.linspace(10, 6, h, dtype=torch.float64)
    t[:, h:] = torch.linspace(0, -4, c - h, dtype=torch.float64)
    s = scale * (t + noise * torch.randn(B, c, generator=g, dtype=torch.float64))
    return s, t


def live_pairs(s, t, k: float, k_scale: str):
    """Share of channel pairs with tanh'(k_eff Δs) > 0.01: all pairs, and the discordant ones."""
    x = standardize_scale(s) if k_scale == "std" else s
    d = (x[:, :, None] - x[:, None, :]) * k
    dt = t[:, :, None] - t[:, None, :]
    c = s.shape[1]
    upper = torch.ones(c, c, dtype=torch.bool).triu(1)
    live = ((1 - torch.tanh(d) ** 2) > 0.01)[:, upper]
    disc = ((d * dt) < 0)[:, upper]
    return float(live.double().mean()), float(live[disc].double().mean()) if disc.any() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="result JSON (default: runs/benchmarks/distill_rank_sharpness_cpu.json)")
    add_update_results_flag(ap)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.process_time()
    rows = []
    for c, noise, scale in ((c, n, x) for c in CHANNELS for n in NOISES for x in SCALES):
        if True:
            s, t = constructed(c, scale, noise)
            s.requires_grad_(True)
            (g_kd,) = torch.autograd.grad(kd_loss(s, t, 4.0), s)
            exact = float(rank_loss(s.detach(), t, form="sign"))
            kd_norm = float(g_kd.norm(dim=1).mean())
            for form, k_scale, k in SETTINGS:
                kw = {"k": k} if form == "tanh" else {"beta": k}
                loss = rank_loss(s, t, form=form, k_scale=k_scale, **kw)
                (g,) = torch.autograd.grad(loss, s)
                live, live_disc = live_pairs(s.detach(), t, k, k_scale) if form == "tanh" else (None, None)
                rows.append({"C": c, "noise": noise, "student_scale": scale, "student_logit_std": float(s.detach().std(1).mean()),
                             "form": form, "k_scale": k_scale, "k_or_beta": k, "loss": float(loss.detach()), "exact_1_minus_tau": exact,
                             "grad_norm_per_row": float(g.norm(dim=1).mean()) * B,  # per row, as if the loss were summed
                             "live_pairs": live, "live_discordant_pairs": live_disc,
                             "kd_T4_grad_norm_per_row": kd_norm * B})
    lines = ["Gradient norms are per row of the constructed logits; 'live' = tanh'(k_eff·Δs) > 0.01.", "",
             "| C | noise | student scale (row std) | form | k_scale | k / β | 1 − τ̃ (exact 1 − τ) | ‖∂L/∂s‖ per row | live pairs "
             "(discordant) | KD(T=4) ‖∂/∂s‖ per row |", "|---|---|---|---|---|---|---|---|---|---|"]
    pct = lambda v: "—" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    for r in rows:
        live = "—" if r["live_pairs"] is None else f"{pct(r['live_pairs'])} ({pct(r['live_discordant_pairs'])})"
        lines.append(f"| {r['C']} | {r['noise']:g} | {r['student_scale']:g} ({r['student_logit_std']:.2f}) | {r['form']} | "
                     f"{r['k_scale']} | {r['k_or_beta']:g} | {r['loss']:.3f} ({r['exact_1_minus_tau']:.3f}) | {r['grad_norm_per_row']:.3g} | {live} | "
                     f"{r['kd_T4_grad_norm_per_row']:.3g} |")
    table = "\n".join(lines)
    report = {"benchmark": "distill_rank_sharpness", "command": " ".join([sys.executable] + sys.argv),
              "construction": __doc__.split("\n\n")[1].strip(), "batch": B, "rows": rows,
              "cpu_seconds": time.process_time() - t0, "load_average": list(os.getloadavg()),
              "device": "cpu", "torch": torch.__version__, "markdown": table}
    out = output_path(args.out, "distill_rank_sharpness_cpu.json", args.update_results)
    write_json(out, report, what="benchmark result")
    atomic_write(out.with_suffix(".md"), table + "\n", what="benchmark table")
    print(table)
    print(f"written {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
