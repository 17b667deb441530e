"""Correctness checks of the GPU paths: task batching, torch.compile, bf16, auto chunking, device-side data.

The unit tests check these paths on the CPU (float64, tiny models); this script repeats the checks on
a real device at benchmark sizes (float32, TF32 off), where kernels differ. Each check records its
measured differences and passes or fails against a float32 tolerance; the exit status is 1 when any
check fails.

    python benchmarks/gpu_check.py                  # CUDA, Conv4-32 at 84 px
    python benchmarks/gpu_check.py --device cpu --small   # the same checks, small, as a dry run
Writes gpu_check_<device>.json into runs/benchmarks/ (benchmarks/results/ with --update-results, or --out DIR).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from metakd.data.base import ImageSplit  # noqa: E402
from metakd.data.sampler import EpisodeSampler  # noqa: E402
from metakd.learners import build_learner  # noqa: E402
from metakd.models import build_backbone  # noqa: E402
from benchlib.results import add_update_results_flag, output_dir  # noqa: E402
from benchlib.maml_work import make_batches, write_json  # noqa: E402
from benchlib.timing import device_description, device_slug  # noqa: E402

LOSS_RTOL, GRAD_RTOL = 1e-4, 1e-3  # float32, different kernels and summation orders


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm().clamp_min(1e-30))


class Checker:
    def __init__(self, device: torch.device, size: int, hidden: int):
        self.device, self.size, self.hidden = device, size, hidden
        self.results: List[dict] = []

    def model(self, seed: int = 0) -> torch.nn.Module:
        torch.manual_seed(seed)
        return build_backbone("conv4", 5, in_channels=3, image_size=self.size, hidden=self.hidden).to(self.device)

    def batch(self, tasks: int, shots: int = 1, seed: int = 0):
        return make_batches(1, self.device, seed, tasks, shots, self.size)[0]

    def run(self, name: str, fn: Callable[[], Dict]) -> None:
        start = time.perf_counter()
        try:
            details = fn()
            ok = bool(details.pop("ok"))
            error = None
        except Exception as exc:  # noqa: BLE001 - a failing check is recorded and the others still run
            details, ok, error = {}, False, f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        entry = {"check": name, "ok": ok, "seconds": time.perf_counter() - start, **details}
        if error:
            entry["error"] = error
        self.results.append(entry)
        shown = ", ".join(f"{k}={v:.2e}" if isinstance(v, float) else f"{k}={v}" for k, v in details.items())
        print(f"{'PASS' if ok else 'FAIL'} {name}: {shown}{' ' + error if error else ''}", flush=True)


def loss_and_grads(learner, batch):
    loss, _ = learner.meta_loss(batch)
    grads = torch.autograd.grad(loss, list(learner.parameters()), allow_unused=True)
    return loss.detach(), torch.cat([g.flatten() for g in grads if g is not None])


def pair_difference(c: Checker, name: str, a_options: dict, b_options: dict, tasks: int = 8) -> Dict:
    """Loss and meta-gradient of learner ``name`` under two option sets, same weights and batch."""
    model = c.model()
    a = build_learner(name, copy.deepcopy(model), **a_options).to(c.device)
    b = build_learner(name, copy.deepcopy(model), **b_options).to(c.device)
    b.load_state_dict(a.state_dict())
    batch = c.batch(tasks)
    la, ga = loss_and_grads(a, batch)
    lb, gb = loss_and_grads(b, batch)
    acc_a, acc_b = a.evaluate(batch), b.evaluate(batch)
    out = {"loss_rel": rel(la, lb), "grad_rel": rel(ga, gb), "eval_acc_max_diff": float((acc_a - acc_b).abs().max())}
    out["ok"] = out["loss_rel"] < LOSS_RTOL and out["grad_rel"] < GRAD_RTOL and out["eval_acc_max_diff"] <= 1 / 15 + 1e-6
    return out


def check_all(c: Checker) -> None:
    cuda = c.device.type == "cuda"
    for name, opts in [("maml", {}), ("maml", {"first_order": True}), ("anil", {}), ("boil", {}), ("metasgd", {})]:
        label = f"vmap_equals_sequential[{name}{'-fo' if opts else ''}]"
        c.run(label, lambda n=name, o=opts: pair_difference(c, n, {**o, "task_batching": "off"},
                                                            {**o, "task_batching": "vmap"}))
    modes = ["default"] + (["reduce-overhead"] if cuda else [])
    for mode in modes:
        for tb in ("off", "vmap"):
            c.run(f"compile_equals_eager[fomaml,{tb},{mode}]",
                  lambda tb=tb, mode=mode: pair_difference(c, "fomaml", {"task_batching": tb},
                                                           {"task_batching": tb, "compile": True, "compile_mode": mode}))

    def auto_chunk() -> Dict:
        model = c.model()
        whole = build_learner("maml", copy.deepcopy(model), task_batching="vmap", task_chunk=None).to(c.device)
        small = build_learner("maml", copy.deepcopy(model), task_batching="vmap", task_chunk=4).to(c.device)
        batch = c.batch(32)
        if cuda:
            torch.cuda.reset_peak_memory_stats(c.device)
        lw, gw = loss_and_grads(whole, batch)
        peak = torch.cuda.max_memory_allocated(c.device) / 2**20 if cuda else None
        ls, gs = loss_and_grads(small, batch)
        chunk = list(whole._chunk_cache.values()) or [32]
        free = torch.cuda.mem_get_info(c.device)[0] / 2**20 if cuda else None
        out = {"auto_chunk": chunk[0], "peak_mib_auto": peak, "free_mib_after": free,
               "loss_rel_vs_chunk4": rel(lw, ls), "grad_rel_vs_chunk4": rel(gw, gs)}
        out["ok"] = out["loss_rel_vs_chunk4"] < LOSS_RTOL and out["grad_rel_vs_chunk4"] < GRAD_RTOL
        return out

    c.run("auto_chunk_second_order_mb32", auto_chunk)

    def bf16() -> Dict:
        model = c.model()
        full = build_learner("maml", copy.deepcopy(model), first_order=True).to(c.device)
        half = build_learner("maml", copy.deepcopy(model), first_order=True, amp="bf16").to(c.device)
        batch = c.batch(16)
        lf, gf = loss_and_grads(full, batch)
        lh, gh = loss_and_grads(half, batch)
        agree = float((full.evaluate(batch) - half.evaluate(batch)).abs().mean())
        out = {"loss_rel": rel(lf, lh), "grad_rel": rel(gf, gh), "mean_abs_acc_diff": agree}
        out["ok"] = out["loss_rel"] < 5e-2 and out["grad_rel"] < 0.2  # bf16 keeps ~3 significant digits
        return out

    c.run("bf16_close_to_float32", bf16)

    def device_storage() -> Dict:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(20 * 30, c.size, c.size, 3), dtype=np.uint8)
        split = ImageSplit(images, np.repeat(np.arange(20), 30), [f"c{i}" for i in range(20)], name="synthetic")
        host = EpisodeSampler(split, 5, 1, 15, seed=3, device=c.device, storage="host", normalize="dataset")
        dev = EpisodeSampler(split, 5, 1, 15, seed=3, device=c.device, storage="device", normalize="dataset")
        worst = 0.0
        for _ in range(10):
            episodes = host.sample_episodes(8)
            assert [e.classes.tolist() for e in episodes] == [e.classes.tolist() for e in dev.sample_episodes(8)]
            a, b = host.batch(episodes), dev.batch(episodes)
            assert a.support_x.device.type == b.support_x.device.type == c.device.type
            worst = max(worst, float((a.support_x - b.support_x).abs().max()), float((a.query_x - b.query_x).abs().max()))
        return {"max_abs_pixel_diff": worst, "ok": worst == 0.0}

    c.run("device_storage_equals_host", device_storage)

    def msd_on_device() -> Dict:
        model = c.model()
        learner = build_learner("msd", copy.deepcopy(model), views=2, host_options={"first_order": True}).to(c.device)
        loss, metrics = learner.meta_loss(c.batch(4))
        loss.backward()
        finite = all(torch.isfinite(p.grad).all() for p in learner.parameters() if p.grad is not None)
        return {"loss": loss.item(), "ok": bool(torch.isfinite(loss)) and finite}

    c.run("msd_views_on_device", msd_on_device)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true", help="28 px, 8 channels: a quick dry run (CPU)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/benchmarks/)")
    add_update_results_flag(p)
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available (use --device cpu --small for a dry run)")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    c = Checker(device, 28 if args.small else 84, 8 if args.small else 32)
    check_all(c)
    failed = [r["check"] for r in c.results if not r["ok"]]
    report = {"device": device_description(device), "torch": torch.__version__, "size": c.size, "hidden": c.hidden,
              "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:]),
              "loss_rtol": LOSS_RTOL, "grad_rtol": GRAD_RTOL, "failed": failed, "checks": c.results,
              "load_average_end": list(os.getloadavg())}
    out = (args.out or output_dir(args.update_results)) / f"gpu_check_{device_slug(device)}{'_small' if args.small else ''}.json"
    write_json(out, report)
    print(f"{len(c.results) - len(failed)}/{len(c.results)} checks passed; wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
