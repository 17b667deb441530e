"""Sizes checked before the work: what a run will allocate, against what this machine lets it use.

A count such as ``train.val_episodes=10**9`` or ``--consistency-views 100000`` is a valid integer, but
the run would be killed by the kernel (or end in a MemoryError traceback) minutes later. The checks
here estimate the bytes a count makes the run hold and refuse, up front, one whose estimate exceeds
half of the memory the process may use: one ConfigError naming the key and the estimate.

- ``memory_limit()``: the smallest of physical memory, the address-space limit (``ulimit -v``,
  ``RLIMIT_AS``) and the cgroup limit (containers, batch schedulers).
- ``episode_list_bytes``: a fixed evaluation list (index arrays and bookkeeping of each episode,
  measured ~3 KB for a 5-way 16-image episode at its peak).
- ``image_batch_bytes``: float32 images of ``tasks`` episodes, plus their uint8 copy.
- ``check_bytes``: the refusal itself; ``check_run_sizes``: every size a few-shot config sets.
- ``max_threads()``: the largest ``--threads`` / ``threads`` accepted: 4 x the CPU count (more
  threads than cores never speeds torch up; 100000 of them crashed the process).
"""
from __future__ import annotations

import os
import resource
from typing import Any, Dict, Optional

from .errors import ConfigError

FRACTION = 0.5  # refuse what would take more than this share of the usable memory
EPISODE_OVERHEAD = 512  # bytes per listed episode besides its index arrays (Python objects, results)
THREADS_PER_CPU = 4


def _cgroup_limit() -> Optional[int]:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def memory_limit() -> int:
    """Bytes this process may use: min(physical memory, RLIMIT_AS, the cgroup limit)."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
        limits.append(soft)
    cgroup = _cgroup_limit()
    if cgroup:
        limits.append(cgroup)
    return min(limits) if limits else 1 << 62


def human(n: float) -> str:
    """``3.2 GB``-style size."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def episode_list_bytes(episodes: int, n_way: int, k_shot: int, q_query: int) -> int:
    """Peak bytes of a fixed list of ``episodes`` episodes (int64 rows, built in (T*N, K+Q) tables)."""
    return int(episodes) * (EPISODE_OVERHEAD + 32 * int(n_way) * (int(k_shot) + int(q_query)))


def image_batch_bytes(tasks: int, n_way: int, per_class: int, channels: int, size: int) -> int:
    """float32 images (and their uint8 source) of ``tasks`` episodes of ``n_way`` x ``per_class`` images."""
    return int(tasks) * int(n_way) * int(per_class) * int(channels) * int(size) ** 2 * 5


def check_bytes(key: str, estimate: int, what: str, source: Optional[str] = None) -> None:
    """ConfigError naming ``key`` when ``estimate`` bytes exceed FRACTION of ``memory_limit()``."""
    limit = memory_limit()
    if estimate > FRACTION * limit:
        prefix = f"{source}: " if source else ""
        raise ConfigError(f"{prefix}{key} is too large: {what} would take about {human(estimate)}, more than half of the "
                          f"{human(limit)} of memory this process may use; lower {key}")


def check_run_sizes(cfg: Dict[str, Any], where=lambda key: "") -> None:
    """The sizes a validated few-shot config sets (validation and test episode lists, the meta-batch and
    evaluation batch images), each checked with ``check_bytes``; ``where(key)``: the source to blame."""
    ep, size = cfg["episodes"], cfg["data"]["image_size"]
    channels = cfg["data"]["options"].get("channels", 3)
    channels = channels if isinstance(channels, int) and 1 <= channels <= 4 else 3
    train_way = ep["train_n_way"] or ep["n_way"]
    for key, count in (("train.val_episodes", cfg["train"]["val_episodes"]), ("eval.episodes", cfg["eval"]["episodes"])):
        check_bytes(key, episode_list_bytes(count, ep["n_way"], ep["k_shot"], ep["test_q_query"]),
                    f"{count} fixed {ep['n_way']}-way episodes", where(key) or None)
    check_bytes("train.meta_batch", image_batch_bytes(cfg["train"]["meta_batch"], train_way, ep["k_shot"] + ep["q_query"],
                                                      channels, size),
                f"the images of {cfg['train']['meta_batch']} training episodes", where("train.meta_batch") or None)
    check_bytes("eval.batch_size", image_batch_bytes(cfg["eval"]["batch_size"], ep["n_way"], ep["k_shot"] + ep["test_q_query"],
                                                     channels, size),
                f"the images of {cfg['eval']['batch_size']} evaluation episodes", where("eval.batch_size") or None)


def max_threads() -> int:
    """The most torch CPU threads accepted: THREADS_PER_CPU x the CPUs this process may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus) * THREADS_PER_CPU


def check_threads(value: int, name: str, source: Optional[str] = None) -> int:
    """``value`` if within 1..max_threads(), else ConfigError naming ``name``."""
    top = max_threads()
    if not 1 <= int(value) <= top:
        prefix = f"{source}: " if source else ""
        raise ConfigError(f"{prefix}{name} must be in 1..{top} ({THREADS_PER_CPU} x the CPUs of this machine), got {value!r}")
    return int(value)
