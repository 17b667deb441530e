"""The supervised classification trainer: ``metakd pretrain`` and both phases of ``metakd distill``.

``SupervisedTrainer`` runs epochs of mini-batches over a training set on the shared step loop
(``metakd.engine.training.loop.StepLoop``: signals stop at step boundaries, atomic last.pt, exact resume,
metrics.jsonl). What differs between jobs are hooks:

- ``batch(idx)``: images and labels of one mini-batch on the device (augmented);
- ``objective(x, y, idx)``: the loss and its logged parts (cross-entropy, optionally label-smoothed;
  the distillation student adds KD / rank terms or runs MKD's temperature step);
- ``end_of_epoch(guard)``: the evaluation at the end of an epoch (test top-1 for distillation, few-shot
  validation episodes for pre-training), run inside ``guard.abandonable()`` and rerun on resume;
- ``extra_state()`` / ``load_extra(ckpt)``: job-specific parts of the checkpoint.

Exact resume: the batch order of an epoch is a pure function of (seed, epoch) (``epoch_order``); the
position inside the epoch, model, optimiser, scheduler, generators and global RNG states are saved.
The scheduler steps once per epoch.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ... import __version__
from ...errors import MetakdError
from ..runs.checkpoint import rng_state, safe_load, set_rng_state
from ..runs.folder import StopGuard, config_differences
from ..runs.metrics import JsonlLogger
from .distill_data import epoch_order
from .loop import StepLoop


def batches_per_epoch(n: int, batch_size: int) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 else 0)  # a last batch of one image would break BatchNorm


class SupervisedTrainer(StepLoop):
    """Trains ``model`` on ``train_idx`` for ``epochs``; see the module docstring for the hooks.

    kind: the checkpoint's ``kind``; role: its name in messages ("teacher", "student", "pretrain");
    resume_free: config keys a resume may change (everything else must match the checkpoint).
    """

    def __init__(self, cfg: Dict[str, Any], *, kind: str, role: str, model: nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler: Any, train_idx: Tensor, epochs: int, seed: int,
                 device: torch.device, out: Path, resume_free: Tuple[str, ...], progress: bool = True,
                 label: str = ""):
        self.cfg, self.kind, self.role, self.model = cfg, kind, role, model
        self.optimizer, self.scheduler, self.train_idx = optimizer, scheduler, train_idx
        self.epochs, self.seed, self.device, self.out = epochs, seed, device, Path(out)
        self.resume_free, self.progress, self.label = resume_free, progress, label or role
        t = cfg["train"]
        self.batch_size, self.log_every = t["batch_size"], t["log_every"]
        self.checkpoint_every = t["checkpoint_every"]
        self.eval_every = t.get("eval_every", t.get("val_every", 1))
        self.nb = batches_per_epoch(len(train_idx), self.batch_size)
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        self.pending_end = False  # the epoch ``self.epoch`` ended, its record / evaluation not done yet
        self.window: Dict[str, List[float]] = {}
        self.epoch_sums: Dict[str, float] = {"loss": 0.0, "acc": 0.0, "n": 0.0, "seconds": 0.0}
        self.last_eval: Dict[str, Any] = {}
        self._order: Optional[Tuple[int, Tensor]] = None
        self._bar: Any = None
        self.logger = JsonlLogger(self.out / "metrics.jsonl", tensorboard=self.out / "tensorboard"
                                  if cfg["tensorboard"] else None)

    # -- hooks
    def batch(self, idx: Tensor) -> Tuple[Tensor, Tensor]:
        raise NotImplementedError

    def objective(self, x: Tensor, y: Tensor, idx: Tensor) -> Tuple[Optional[Tensor], Dict[str, float], Optional[Tensor]]:
        """(loss to back-propagate, logged parts, logits for the train accuracy). A loss of None means the
        objective took its optimiser step itself (MKD); its parts must then include "loss"."""
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=float(self.cfg["train"].get("label_smoothing", 0.0)))
        return loss, {"ce": float(loss.detach())}, logits

    def end_of_epoch(self, guard: StopGuard) -> Dict[str, Any]:
        return {}

    def extra_state(self) -> Dict[str, Any]:
        return {}

    def load_extra(self, ckpt: Dict[str, Any]) -> None:
        pass

    def epoch_note(self, rec: Dict[str, Any]) -> str:
        return ""

    # -- one step
    def train_step(self) -> Dict[str, float]:
        if self._order is None or self._order[0] != self.epoch:
            self._order = (self.epoch, self.train_idx[epoch_order(len(self.train_idx), self.seed, self.epoch)])
        if self._bar is None:
            self._bar = tqdm(total=self.nb, initial=self.batch_in_epoch, disable=not self.progress, dynamic_ncols=True,
                             desc=f"{self.label} epoch {self.epoch + 1}/{self.epochs}", unit="batch", leave=False)
        tic = time.perf_counter()
        b = self.batch_in_epoch
        idx = self._order[1][b * self.batch_size:(b + 1) * self.batch_size]
        x, y = self.batch(idx)
        loss, parts, logits = self.objective(x, y, idx)
        if loss is not None:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.fault_point("step", self.step + 1)
            parts["loss"] = float(loss.detach())
        parts["acc"] = math.nan if logits is None else float((logits.detach().argmax(-1) == y).float().mean())
        self.epoch_sums["seconds"] += time.perf_counter() - tic
        return parts

    def after_step(self, m: Dict[str, float]) -> None:
        self.batch_in_epoch += 1
        for k, v in m.items():
            self.window.setdefault(k, []).append(v)
        self.epoch_sums["loss"] += m["loss"]
        if not math.isnan(m["acc"]):
            self.epoch_sums["acc"] += m["acc"]
            self.epoch_sums["n"] += 1
        self._bar.update(1)
        if self.step % self.log_every == 0:
            rec = {"kind": "train", "epoch": self.epoch + 1, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"]}
            rec.update({k: _nanmean(v) for k, v in self.window.items()})
            self.log(rec)
            self._bar.set_postfix({k: f"{rec[k]:.3f}" for k in ("loss", "t_teacher", "t_student") if k in rec})
            self.window = {}
        if self.batch_in_epoch == self.nb:
            self._close_bar()
            self.epoch += 1
            self.batch_in_epoch = 0
            if self.scheduler is not None:
                self.scheduler.step()
            self.pending_end = True

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # -- boundaries
    def finished(self) -> bool:
        return self.epoch >= self.epochs and not self.pending_end

    def pending(self) -> bool:
        return self.pending_end

    def boundary(self, guard: StopGuard) -> None:
        """The end of epoch ``self.epoch``: its evaluation (abandonable), record, the periodic last.pt."""
        if not self.pending_end:
            return
        rec: Dict[str, Any] = {"kind": "epoch", "epoch": self.epoch, "step": self.step,
                               "train_loss": self.epoch_sums["loss"] / self.nb,
                               "train_acc": self.epoch_sums["acc"] / self.epoch_sums["n"] if self.epoch_sums["n"] else None,
                               "seconds": self.epoch_sums["seconds"], "lr": self.optimizer.param_groups[0]["lr"]}
        if self.epoch % self.eval_every == 0 or self.epoch == self.epochs:
            rec.update(self.end_of_epoch(guard))
        rec.update(self.epoch_extras())
        self.log(rec)
        if self.progress:
            tqdm.write(f"{self.label} epoch {self.epoch}/{self.epochs}: loss {rec['train_loss']:.4f}{self.epoch_note(rec)}")
        self.epoch_sums = {"loss": 0.0, "acc": 0.0, "n": 0.0, "seconds": 0.0}
        self.pending_end = False
        if self.epoch % self.checkpoint_every == 0 or self.epoch == self.epochs:
            self.save("last.pt")

    def epoch_extras(self) -> Dict[str, Any]:
        return {}

    def stopped(self, guard: StopGuard, agreed: bool) -> None:
        self._close_bar()
        self.model.train()
        super().stopped(guard, agreed)

    def stop_error(self, guard: StopGuard) -> MetakdError:
        verb = "terminated (SIGTERM)" if guard.name == "SIGTERM" else "interrupted"
        where = f"after {self.role} epoch {self.epoch} (its evaluation reruns on resume)" if self.pending_end \
            else f"in {self.role} epoch {self.epoch + 1}"
        return MetakdError(f"{verb} {where}; saved {self.out / 'last.pt'} — continue with --resume")

    def fit(self, budget: Optional[int] = None, guard: Optional[StopGuard] = None) -> Tuple[bool, int]:
        """Train to ``epochs`` or for ``budget`` more steps; returns (finished, steps taken); stopped by the
        budget, last.pt is saved. With an (entered) ``guard`` a signal stops at the next step boundary:
        last.pt is saved, MetakdError raised."""
        guard = guard if guard is not None else StopGuard()  # not entered: installs no handler
        self.model.train()
        done, taken = self.run_steps(guard, budget)
        self._close_bar()
        if not done:
            self.guard = guard
            try:
                self.save("last.pt")
            finally:
                self.guard = None
        return done, taken

    # -- checkpoints
    def state(self) -> Dict[str, Any]:
        return {
            "metakd_version": __version__, "kind": self.kind, "role": self.role, "config": self.cfg,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
            "pending_end": self.pending_end, "window": self.window, "epoch_sums": self.epoch_sums,
            "last_eval": self.last_eval, "rng": rng_state(), **self.extra_state(),
        }

    def resume(self, path: Optional[Path] = None) -> None:
        path = Path(path) if path is not None else self.out / "last.pt"
        if not path.is_file():
            raise MetakdError(f"checkpoint {path} does not exist; nothing to resume (run without --resume)")
        ckpt = safe_load(path)
        if not isinstance(ckpt, dict) or ckpt.get("kind") != self.kind:
            raise MetakdError(f"{path} is not a `metakd {self.command}` checkpoint")
        diffs = config_differences(ckpt["config"], self.cfg, self.resume_free)
        if ckpt.get("role") != self.role:
            diffs.append(f"role: checkpoint {ckpt.get('role')!r}, now {self.role!r}")
        if diffs:
            free = ", ".join(k.rstrip(".") for k in self.resume_free)
            raise MetakdError(f"{path} was written by a different {self.command} config: {'; '.join(diffs)}. Resume "
                              f"with the config it was trained with (only {free} may change)")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.batch_in_epoch, self.step = ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]
        self.pending_end = bool(ckpt.get("pending_end", False))
        self.window, self.epoch_sums = ckpt["window"], ckpt["epoch_sums"]
        self.last_eval = dict(ckpt.get("last_eval") or {})
        self.load_extra(ckpt)
        set_rng_state(ckpt["rng"])
        self.logger.truncate_after(self.step, drop_at_step=("epoch", "val") if self.pending_end else ())

    command = "supervised"


def _nanmean(values: List[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan
