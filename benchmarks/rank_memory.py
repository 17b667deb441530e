"""Peak memory (and time) of the Kendall rank loss, forward + backward, chunked vs unchunked.

    python benchmarks/rank_memory.py                       # B=256, C=1000, tanh, CPU
    python benchmarks/rank_memory.py --device cuda --sizes 256x1000 64x1000

Configurations:
  chunked-auto     rank_loss with the default 64 MiB budget (custom autograd, recomputing backward)
  chunked-64rows   rank_loss(chunk_size=64): fixed 64-row blocks, same custom autograd
  one-block        rank_loss(chunk_size=C): one (B, C, C) block, still recomputed in backward
  naive-chunked    a plain loop over 64-row blocks with ordinary autograd (every block's activations
                   are kept for backward: what checkpointing/recompute avoids)
  naive-full       the textbook (B, C, C) implementation with ordinary autograd

Method. Every configuration runs in a fresh child process so allocator state does not leak between
them. On CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus the
memory allocated before the call. On CPU: the process's resident-set high-water mark (VmHWM in
/proc/self/status) is reset by writing "5" to /proc/self/clear_refs after the inputs are built and a
tiny warm-up call has loaded the kernels; the peak is VmHWM minus VmRSS at that point. Children run
with MALLOC_MMAP_THRESHOLD_=1 MiB so glibc maps every large tensor on its own and unmaps it when
freed; RSS then tracks live tensor memory (with glibc's default adaptive threshold, freed 20-60 MiB
blocks stay in the heap and the same run showed 63-105 MiB instead of 44 MiB for chunked-auto;
``--raw-malloc`` measures that way). Configurations whose estimated peak exceeds ``--limit-gib`` are
skipped and say so. Results go to runs/benchmarks/rank_memory_<device>.json (benchmarks/results/ with
--update-results, or --out FILE; atomic write).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from metakd.atomic import write_json  # noqa: E402
from benchlib.results import add_update_results_flag, output_path  # noqa: E402

CONFIGS = ("chunked-auto", "chunked-64rows", "one-block", "naive-chunked", "naive-full")
# Measured live (B, C, C) tensors at peak, used only to decide what to skip (fp32, tanh form).
ESTIMATED_BLOCKS = {"chunked-auto": 0.0, "chunked-64rows": 0.0, "one-block": 3.0, "naive-chunked": 2.0, "naive-full": 6.0}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _naive_chunked(s, t, k: float, rows: int):
    """Row-block loop with plain autograd: bounded forward, unbounded backward (for comparison)."""
    import torch

    C = s.shape[1]
    total = s.new_zeros(s.shape[0])
    for a in range(0, C, rows):
        b = min(a + rows, C)
        f = torch.tanh(k * (s[:, a:b, None] - s[:, None, a:])) * torch.tanh(k * (t[:, a:b, None] - t[:, None, a:]))
        n = b - a
        total = total + 0.5 * f[:, :, :n].sum(dim=(1, 2)) + f[:, :, n:].sum(dim=(1, 2))
    return 1.0 - total / (C * (C - 1) / 2)


def _loss_fn(config: str, form: str):
    from metakd.distill import pairwise_tau_reference, rank_loss

    if config == "chunked-auto":
        return lambda s, t: rank_loss(s, t, form)
    if config == "chunked-64rows":
        return lambda s, t: rank_loss(s, t, form, chunk_size=64)
    if config == "one-block":
        return lambda s, t: rank_loss(s, t, form, chunk_size=s.shape[1])
    if config == "naive-chunked":
        if form != "tanh":
            raise SystemExit("naive-chunked is only written for the tanh form")
        return lambda s, t: _naive_chunked(s, t, 100.0, 64).mean()
    return lambda s, t: (1.0 - pairwise_tau_reference(s, t, form)).mean()


def child(config: str, batch: int, classes: int, form: str, device: str) -> dict:
    """Measure one configuration in this (fresh) process."""
    import torch

    torch.manual_seed(0)
    fn = _loss_fn(config, form)
    warm_s = torch.randn(2, 16, device=device, requires_grad=True)
    fn(warm_s, torch.randn(2, 16, device=device)).backward()
    s = torch.randn(batch, classes, device=device, requires_grad=True)
    t = torch.randn(batch, classes, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_kib("VmRSS") * 1024
    start = time.perf_counter()
    loss = fn(s, t)
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _status_kib("VmHWM") * 1024 - base
    seconds = time.perf_counter() - start
    return {"peak_bytes": int(peak), "seconds": seconds, "loss": float(loss), "grad_norm": float(s.grad.norm())}


def _run_child(config: str, batch: int, classes: int, form: str, device: str, raw_malloc: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", config, "--sizes", f"{batch}x{classes}", "--form", form, "--device", device]
    env = dict(os.environ)
    if not raw_malloc:
        env["MALLOC_MMAP_THRESHOLD_"] = str(2**20)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _parse_size(text: str) -> tuple[int, int]:
    try:
        b, c = text.lower().split("x")
        return int(b), int(c)
    except ValueError:
        raise SystemExit(f"--sizes: expected BxC like 256x1000, got {text!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["256x1000"], help="BxC pairs, e.g. 256x1000 64x1000")
    parser.add_argument("--form", default="tanh", choices=("tanh", "sigmoid", "sign"))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--limit-gib", type=float, default=8.0, help="skip configurations estimated above this")
    parser.add_argument("--out", default=None, help="JSON path (default runs/benchmarks/rank_memory_<device>.json)")
    add_update_results_flag(parser)
    parser.add_argument("--raw-malloc", action="store_true", help="keep glibc's adaptive mmap threshold (CPU)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.child:
        batch, classes = _parse_size(args.sizes[0])
        print(json.dumps(child(args.child, batch, classes, args.form, device)))
        return

    rows = []
    for size in args.sizes:
        batch, classes = _parse_size(size)
        block = batch * classes * classes * 4
        for config in args.configs:
            row = {"config": config, "batch": batch, "classes": classes, "form": args.form}
            estimate = ESTIMATED_BLOCKS[config] * block
            if estimate > args.limit_gib * 2**30:
                row["skipped"] = f"estimated {estimate / 2**30:.1f} GiB > --limit-gib {args.limit_gib}"
            else:
                row.update(_run_child(config, batch, classes, args.form, device, args.raw_malloc))
            rows.append(row)
            peak = f"{row['peak_bytes'] / 2**20:10.1f}" if "peak_bytes" in row else f"{'-':>10}"
            secs = f"{row['seconds']:8.2f}" if "seconds" in row else f"{'-':>8}"
            note = row.get("skipped") or row.get("error") or f"loss={row['loss']:.6f} |grad|={row['grad_norm']:.4e}"
            print(f"{size:>10} {config:>15} {peak} MiB {secs} s  {note}", flush=True)

    device_name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    report = {
        "device": device,
        "device_name": device_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "method": "cuda max_memory_allocated delta"
        if device == "cuda"
        else "VmHWM - VmRSS after clear_refs reset, fresh process per config, "
        + ("glibc default malloc" if args.raw_malloc else "MALLOC_MMAP_THRESHOLD_=1MiB"),
        "command": " ".join([Path(sys.executable).name, "benchmarks/rank_memory.py", *sys.argv[1:]]),
        "pairwise_block_bytes_note": "one fp32 (B, C, C) tensor = 4·B·C² bytes",
        "results": rows,
    }
    out = output_path(args.out, f"rank_memory_{device}.json", args.update_results)
    write_json(out, report, what="benchmark result")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
