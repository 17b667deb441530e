"""Timing and peak memory measured the same way for every runner, and how results name the device.

Peak memory: on CUDA, torch.cuda.max_memory_allocated() above the memory allocated before the run (counters
reset per run); on the CPU, the peak resident set size (VmHWM) above the RSS at the start of the run, reset
first through /proc/self/clear_refs after returning freed heap pages with glibc's malloc_trim; None where
that is unavailable.
"""
from __future__ import annotations

import ctypes
import gc
import os
import platform
import re
import time
from typing import Callable, Dict, List, Optional

import torch

from metakd.data.episode import EpisodeBatch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kib(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mib(step: Callable[[EpisodeBatch], float], batches: List[EpisodeBatch], device: torch.device,
                    runs: int = 2) -> Optional[float]:
    """Peak memory (MiB) of ``runs`` iterations above the level before them; see the module docstring."""
    sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        for i in range(runs):
            step(batches[i % len(batches)])
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    _trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    base = _status_kib("VmRSS")
    for i in range(runs):
        step(batches[i % len(batches)])
    peak = _status_kib("VmHWM")
    return None if base is None or peak is None else (peak - base) / 1024


def time_alternating(steps: Dict[str, Callable], batches: List[EpisodeBatch], device: torch.device, warmup: int,
                     iters: int) -> Dict[str, List[float]]:
    """Seconds of each timed iteration per runner; runners take turns, their order flipped every iteration."""
    names = list(steps)
    for i in range(warmup):
        for name in names:
            steps[name](batches[i % len(batches)])
    times: Dict[str, List[float]] = {name: [] for name in names}
    for i in range(iters):
        for name in (names if i % 2 == 0 else names[::-1]):
            sync(device)
            start = time.perf_counter()
            steps[name](batches[i % len(batches)])
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs, {torch.get_num_threads()} threads)"


def device_slug(device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda-" + re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return "cpu"
