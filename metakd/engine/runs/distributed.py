"""Data-parallel meta-training and sharded evaluation on torch.distributed (torchrun, SLURM).

Launch: ``torchrun --nproc_per_node=N -m metakd train CONFIG`` (or any launcher that sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT). Without those variables everything here is a
no-op and a run is the plain single-process one.

The rank-aware scheme (why a W-process run equals a 1-process run with the same seed):

* Every rank builds the same training sampler (same seed) and draws the indices of the *whole*
  global meta-batch (``EpisodeSampler.sample_episodes(meta_batch)``: class and image-row numbers
  only, no pixels). Rank r keeps the contiguous shard ``[r*T/W, (r+1)*T/W)`` and gathers only its
  own images. The global meta-batch, and the stream position saved for resume, are therefore
  independent of the world size.
* ``train.meta_batch`` must be divisible by the world size (ConfigError otherwise). With equal shards
  the global meta-loss (mean over T tasks) is the average of the ranks' shard means, so the
  meta-gradients are all-reduced by SUM and divided by W: every rank then holds the global
  gradient and takes the same optimiser step; parameters stay identical without a broadcast.
* Randomness inside a learner step (dropout, DropBlock, MSD's augmentations) cannot be split per task
  without the learner's help, so in a distributed run torch's generators are reseeded before every
  step from (seed, rank, step). Runs stay reproducible and resume exactly for a given world size;
  they equal a run with another world size only for learners without such randomness (MAML and
  friends with the default Conv4/ResNet-12 settings, ProtoNet).
* BatchNorm running statistics (``bn: running``) are averaged over the ranks after every step.

Evaluation shards the fixed episode list into contiguous blocks, one per rank, and gathers the
per-episode accuracies back in episode order, so the mean and 95% CI are those of the full list.

Backend: NCCL when the run's device is CUDA, gloo otherwise; METAKD_DIST_BACKEND overrides.
Every collective has a timeout (METAKD_DIST_TIMEOUT seconds, default 1800): when a rank dies or
stalls, the others stop with an error naming the operation instead of hanging.
"""
from __future__ import annotations

import atexit
import datetime
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, TypeVar

import torch
import torch.distributed as dist

from ...errors import ConfigError, DataError, MetakdError

T = TypeVar("T")

ENV_TIMEOUT = "METAKD_DIST_TIMEOUT"
ENV_BACKEND = "METAKD_DIST_BACKEND"
DEFAULT_TIMEOUT_S = 1800.0
_ERRORS = {"MetakdError": MetakdError, "ConfigError": ConfigError, "DataError": DataError}


def launched() -> bool:
    """True when a launcher (torchrun, srun with the variables exported) asked for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def timeout_seconds() -> float:
    """METAKD_DIST_TIMEOUT (seconds, > 0) or the default; ConfigError for anything else."""
    raw = os.environ.get(ENV_TIMEOUT)
    if raw is None or raw.strip() == "":
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{ENV_TIMEOUT} must be a number of seconds > 0, got {raw!r}")
    return value


def choose_backend(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo for the CPU; METAKD_DIST_BACKEND (nccl / gloo / mpi / ucc) overrides."""
    override = os.environ.get(ENV_BACKEND, "").strip().lower()
    if override:
        if override not in ("nccl", "gloo", "mpi", "ucc"):
            raise ConfigError(f"{ENV_BACKEND} must be nccl, gloo, mpi or ucc, got {override!r}")
        return override
    return "nccl" if device.type == "cuda" else "gloo"


def _env_int(name: str) -> int:
    raw = os.environ.get(name)
    try:
        return int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"distributed launch: environment variable {name} must be an integer, got {raw!r} "
                          "(launch with torchrun, or export RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)") from None


@dataclass
class DistContext:
    """Who this process is in the job. ``world_size == 1`` (the default) makes every method a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __str__(self) -> str:
        return f"rank {self.rank}/{self.world_size}" if self.active else "single process"

    # -- placement

    def device_for(self, device: torch.device) -> torch.device:
        """One GPU per process: a generic ``cuda`` / ``cuda:0`` becomes ``cuda:<local rank>`` (and current)."""
        if not self.active or device.type != "cuda":
            return device
        if torch.cuda.device_count() <= self.local_rank:
            raise ConfigError(f"{self}: local rank {self.local_rank} needs GPU {self.local_rank}, but this node has "
                              f"{torch.cuda.device_count()}; launch at most that many processes per node")
        device = torch.device("cuda", self.local_rank)
        torch.cuda.set_device(device)
        return device

    def shard(self, total: int, what: str = "train.meta_batch") -> slice:
        """Rank r's contiguous share of ``total`` tasks; ConfigError unless ``total`` divides evenly."""
        if total % self.world_size:
            raise ConfigError(
                f"{what}={total} is not divisible by the world size {self.world_size}: every process trains "
                f"on an equal share of each meta-batch; choose {what} as a multiple of {self.world_size} "
                f"(e.g. {what}={max(self.world_size, total - total % self.world_size)}) or launch another number of processes")
        per = total // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def block(self, total: int) -> slice:
        """Rank r's contiguous block of ``total`` items when they need not divide evenly (evaluation)."""
        return slice(self.rank * total // self.world_size, (self.rank + 1) * total // self.world_size)

    # -- collectives (each failure becomes a MetakdError naming the operation)

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except MetakdError:
            raise
        except (RuntimeError, ValueError, ConnectionError, OSError) as exc:
            raise MetakdError(
                f"{self}: {what} failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                f"Another process of the job probably died or stalled (timeout {self.timeout_s:g} s, set "
                f"{ENV_TIMEOUT} to change it); see that rank's output for the original error") from None

    def barrier(self, what: str = "barrier") -> None:
        if self.active:
            with self._guard(what):
                dist.barrier()

    def all_gather_object(self, obj: Any, what: str = "all_gather") -> List[Any]:
        """Every rank's ``obj`` (picklable), in rank order."""
        if not self.active:
            return [obj]
        out: List[Any] = [None] * self.world_size
        with self._guard(what):
            dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, what: str = "broadcast") -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        with self._guard(what):
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def run_on_main(self, fn: Callable[[], T], what: str) -> T:
        """``fn()`` on rank 0 only, its result broadcast; an error there is raised on every rank (same
        class for metakd errors), so control flow never splits between ranks."""
        if not self.active:
            return fn()
        reply: Any = None
        original: Optional[BaseException] = None
        if self.is_main:
            try:
                reply = ("ok", fn())
            except Exception as exc:  # shipped to the other ranks, then re-raised here
                original = exc
                reply = ("error", type(exc).__name__, str(exc))
        reply = self.broadcast_object(reply, what)
        if reply[0] == "ok":
            return reply[1]
        if original is not None:
            raise original
        raise _ERRORS.get(reply[1], MetakdError)(f"rank 0 failed while {what}: {reply[2]}")

    @contextmanager
    def local_leader_first(self, what: str) -> Iterator[None]:
        """Local rank 0 of each node runs the block first (e.g. builds a dataset cache), the others after."""
        if not self.active:
            yield
            return
        if self.local_rank != 0:
            self.barrier(f"waiting for local rank 0 ({what})")
        yield
        if self.local_rank == 0:
            self.barrier(f"waiting for local rank 0 ({what})")

    def check_same_config(self, cfg: Dict[str, Any]) -> None:
        """ConfigError on every rank when the ranks were launched with different configs (names the keys)."""
        if not self.active:
            return
        flat = _flatten(cfg)
        digest = hashlib.sha256(json.dumps(flat, sort_keys=True, default=repr).encode()).hexdigest()
        digests = self.all_gather_object(digest, "comparing the configs of all ranks")
        if len(set(digests)) == 1:
            return
        configs = self.all_gather_object(flat, "comparing the configs of all ranks")
        lines = []
        for r, other in enumerate(configs):
            if digests[r] == digests[0]:
                continue
            keys = sorted(k for k in set(other) | set(configs[0]) if other.get(k, "<unset>") != configs[0].get(k, "<unset>"))
            shown = ", ".join(f"{k}: {configs[0].get(k, '<unset>')!r} on rank 0 vs {other.get(k, '<unset>')!r}" for k in keys[:5])
            lines.append(f"rank {r} differs at {shown}{' ...' if len(keys) > 5 else ''}")
        raise ConfigError("the processes of this job were given different configs (every rank must run the same "
                          "config and overrides): " + "; ".join(lines))

    # -- training

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """grad <- (sum over ranks of grad) / W, in one flat all-reduce.

        Each rank's loss is the mean over its T/W tasks, so this is the gradient of the global mean.
        A parameter without a gradient on every rank keeps ``grad = None`` (optimisers skip it, as in a
        single-process run); one without a gradient on some ranks counts as zeros there.
        """
        if not self.active:
            return
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        dtype = params[0].dtype
        for p in params[1:]:
            dtype = torch.promote_types(dtype, p.dtype)
        device = params[0].device
        parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(device, dtype) for p in params]
        flags = torch.tensor([p.grad is not None for p in params], dtype=dtype, device=device)
        flat = torch.cat(parts + [flags])
        with self._guard("all-reduce of the meta-gradients"):
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat[: flat.numel() - len(params)].div_(self.world_size)
        have = flat[flat.numel() - len(params):].tolist()
        offset = 0
        for p, h in zip(params, have):
            n = p.numel()
            if h > 0:
                g = flat[offset:offset + n].view_as(p).to(p.dtype)
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)
            offset += n

    def average_metrics(self, metrics: Dict[str, float]) -> Dict[str, float]:
        """Mean of each scalar metric over the ranks (equal shards: the global meta-batch's mean)."""
        if not self.active or not metrics:
            return metrics
        keys = sorted(metrics)
        device = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")
        values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=device)
        with self._guard("all-reduce of the training metrics"):
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return dict(zip(keys, (values / self.world_size).tolist()))

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Average floating-point buffers (BatchNorm running statistics) over the ranks."""
        if not self.active:
            return
        bufs = [b for b in module.buffers() if b.is_floating_point()]
        if not bufs:
            return
        flat = torch.cat([b.detach().reshape(-1).double() for b in bufs])
        with self._guard("all-reduce of the BatchNorm statistics"):
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for b in bufs:
            b.data.copy_(flat[offset:offset + b.numel()].view_as(b))
            offset += b.numel()

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank (a start from identical weights)."""
        if not self.active:
            return
        with self._guard("broadcast of the initial weights"), torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def seed_step(self, seed: int, step: int) -> None:
        """Reseed torch (CPU and CUDA) from (seed, rank, step): per-rank randomness that resumes exactly."""
        if not self.active:
            return
        key = hashlib.sha256(f"metakd-step:{seed}:{self.rank}:{step}".encode()).digest()
        torch.manual_seed(int.from_bytes(key[:8], "little") & ((1 << 63) - 1))

    # -- evaluation

    def gather_episode_values(self, local: List[float], total: int, what: str) -> List[float]:
        """Concatenate every rank's block of per-episode values in rank (= episode) order."""
        if not self.active:
            return list(local)
        parts = self.all_gather_object([float(v) for v in local], what)
        out = [v for part in parts for v in part]
        if len(out) != total:
            raise MetakdError(f"{self}: {what}: gathered {len(out)} per-episode values, expected {total}")
        return out


def _flatten(cfg: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def init_distributed(device: torch.device) -> DistContext:
    """The job's DistContext; joins the process group the launcher describes on first call.

    device: the run's device (picks NCCL or gloo). Reuses a group someone else initialised. Returns a
    single-process context when WORLD_SIZE is unset or 1.
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                           dist.get_backend(), timeout_seconds())
    if not launched():
        return DistContext()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 asks for a distributed run, but this torch build has no torch.distributed")
    rank, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ConfigError(f"distributed launch: {name} is not set (torchrun sets it; with srun, export it)")
    backend = choose_backend(device)
    timeout = timeout_seconds()
    ctx = DistContext(rank, world, local, backend, timeout)
    if device.type == "cuda":
        device = ctx.device_for(device)
    try:
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout),
                                **({"device_id": device} if backend == "nccl" else {}))
    except (RuntimeError, ValueError, ConnectionError, OSError) as exc:
        raise MetakdError(f"rank {rank}/{world}: could not join the {backend} process group at "
                          f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} within {timeout:g} s "
                          f"({type(exc).__name__}: {exc})") from None
    atexit.register(_shutdown)
    return ctx


def is_main_process() -> bool:
    """False only on ranks other than 0 of an initialised process group (who must not print results)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
