"""Episodes per second of the EpisodeSampler on a synthetic in-memory split (default 64 classes x 600, 84x84 RGB).

Modes: ``index`` draws episode indices only; ``host`` is ``sampler.sample`` gathering with numpy and
converting on the device; ``device`` gathers from a uint8 copy of the split on the device;
``loader-wN`` is an EpisodeLoader with N DataLoader workers. One JSON per device,
sampler_speed_<device>.json, is written to runs/benchmarks/ (benchmarks/results/ with --update-results,
or --out DIR).

    python benchmarks/sampler_speed.py [--seconds 1.5] [--devices cpu cuda] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from metakd.atomic import write_json as write_result  # noqa: E402
from benchlib.results import add_update_results_flag, output_dir  # noqa: E402
from metakd.data.base import ImageSplit  # noqa: E402
from metakd.data.loader import EpisodeLoader  # noqa: E402
from metakd.data.sampler import EpisodeSampler  # noqa: E402

SHAPES = [(5, 1, 15), (5, 5, 15)]
META_BATCHES = [4, 32]


def synthetic_split(classes: int, per_class: int, size: int) -> ImageSplit:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(classes * per_class, size, size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(classes), per_class)
    return ImageSplit(images, labels, [f"c{i}" for i in range(classes)], name="synthetic/train")


def rate(step, tasks: int, seconds: float, device: torch.device) -> dict:
    """Run ``step`` (one meta-batch) until ``seconds`` pass; episodes/s and ms per meta-batch."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    step()
    sync()
    calls, start = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    return {"episodes_per_s": calls * tasks / elapsed, "ms_per_meta_batch": 1000.0 * elapsed / calls, "calls": calls}


def loader_rate(sampler: EpisodeSampler, tasks: int, workers: int, seconds: float) -> dict:
    """Throughput of an endless EpisodeLoader after its workers have started."""
    it = iter(EpisodeLoader(sampler, num_tasks=tasks, num_workers=workers))
    for _ in range(2 * workers + 1):
        next(it)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = next(it)
        calls += 1
    if sampler.device.type == "cuda":
        torch.cuda.synchronize(sampler.device)
    elapsed = time.perf_counter() - start
    del it, batch
    return {"episodes_per_s": calls * tasks / elapsed, "ms_per_meta_batch": 1000.0 * elapsed / calls, "calls": calls}


def bench_device(split: ImageSplit, device: torch.device, seconds: float, workers: int) -> list:
    rows = []
    for n, k, q in SHAPES:
        host = EpisodeSampler(split, n, k, q, seed=0, device=device)
        stored = EpisodeSampler(split, n, k, q, seed=0, device=device, storage="device")
        for tasks in META_BATCHES:
            modes = {
                "index": rate(lambda: host.sample_episodes(tasks), tasks, seconds, torch.device("cpu")),
                "host": rate(lambda: host.sample(tasks), tasks, seconds, device),
                "device": rate(lambda: stored.sample(tasks), tasks, seconds, device),
            }
            if workers:
                modes[f"loader-w{workers}"] = loader_rate(host, tasks, workers, seconds)
            for mode, r in modes.items():
                rows.append({"device": str(device), "shape": f"{n}w{k}s{q}q", "meta_batch": tasks, "mode": mode, **r})
                print(f"{str(device):6s} {n}w{k}s{q}q  T={tasks:<3d} {mode:10s} "
                      f"{r['episodes_per_s']:10.1f} episodes/s  {r['ms_per_meta_batch']:8.2f} ms/meta-batch", flush=True)
    return rows


def write_json(path: Path, payload: dict) -> None:
    write_result(path, payload, what="benchmark result")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=64)
    ap.add_argument("--per-class", type=int, default=600)
    ap.add_argument("--size", type=int, default=84)
    ap.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the loader mode (0: skip)")
    ap.add_argument("--devices", nargs="*", default=None, help="default: cpu, and cuda when available")
    ap.add_argument("--out", type=Path, help="output folder (default: runs/benchmarks/)")
    add_update_results_flag(ap)
    args = ap.parse_args()
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    split = synthetic_split(args.classes, args.per_class, args.size)
    for name in devices:
        device = torch.device(name)
        rows = bench_device(split, device, args.seconds, args.workers)
        out = (args.out or output_dir(args.update_results)) / f"sampler_speed_{device.type}.json"
        write_json(out, {
            "benchmark": "sampler_speed",
            "split": {"classes": args.classes, "per_class": args.per_class, "image": [args.size, args.size, 3]},
            "seconds_per_measurement": args.seconds,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                        "numpy": np.__version__, "torch_threads": torch.get_num_threads(),
                        "load_average_1min": os.getloadavg()[0],
                        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
            "results": rows,
        })
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
