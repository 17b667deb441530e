"""Meta-training: progress bar, periodic validation on fixed episodes, best checkpoint, exact resume.

Under torchrun the same loop runs data-parallel (see ``metakd.engine.runs.distributed``): each rank trains
on its shard of every meta-batch, meta-gradients are averaged, validation is sharded, and rank 0
alone writes files and shows progress.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import torch
from tqdm.auto import tqdm

from ... import __version__
from ...atomic import write_json
from ...config import dump_config
from ...errors import MetakdError
from ..assembly import (describe_device, make_learner, make_optimizer, make_sampler, make_scheduler, normalization,
                     resolve_device, split_for)
from ..evaluation.sharded import evaluate_sharded
from ..runs.checkpoint import load_checkpoint, rng_state, set_rng_state
from ..runs.distributed import DistContext, init_distributed
from ..runs.folder import (RESUME_FREE_BASE, StopGuard, check_output_dir, config_differences, default_output_dir,
                           data_differences, discard_new_run, fault_point, prepare_run_folder, run_files,
                           run_lock)
from ..runs.metrics import JsonlLogger, format_acc, plot_curves
from .loop import StepLoop

# Config keys a resume may change: they do not change the trained parameters (train.iterations extends or
# shortens the run, except under the cosine schedule whose length it sets; data.root: the same data moved,
# checked by its split summaries). Every other difference is refused, naming the keys.
RESUME_FREE = RESUME_FREE_BASE + ("data.root", "data.storage", "train.iterations", "train.val_every",
                                  "train.checkpoint_every", "train.log_every", "eval.")


@contextmanager
def _rng_untouched(device: torch.device) -> Iterator[None]:
    """Validation must not consume training randomness, or a resumed run would diverge."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


class Trainer(StepLoop):
    """Meta-trains the learner a config describes.

    Files in ``output_dir``: config.yaml, metrics.jsonl (one record per log / validation), last.pt
    (every ``train.checkpoint_every`` steps, at interruption and at the end), best.pt (highest
    validation accuracy), curves.png, summary.json.

    dist: the process's place in a distributed job; default: joined from the launcher's environment
    (torchrun), or a single process. Only rank 0 writes files and shows progress bars.
    """

    def __init__(self, cfg: Dict[str, Any], output_dir: Optional[Path] = None, progress: bool = True,
                 dist: Optional[DistContext] = None):
        self.cfg = cfg
        self.out = Path(output_dir) if output_dir is not None else default_output_dir(cfg)
        device = resolve_device(cfg["device"])
        self.dist = dist if dist is not None else init_distributed(device)
        self.device = self.dist.device_for(device)
        self.progress = progress and self.dist.is_main
        self.dist.run_on_main(lambda: check_output_dir(self.out), f"checking {self.out}")
        self.dist.check_same_config(cfg)
        self.shard = self.dist.shard(cfg["train"]["meta_batch"])
        if cfg["threads"]:
            torch.set_num_threads(cfg["threads"])
        torch.manual_seed(cfg["seed"])
        with self.dist.local_leader_first("loading the dataset"):
            train_split = split_for(cfg, "train")
            val_split = split_for(cfg, "val")
        self.normalize = normalization(cfg, train_split)
        ep = cfg["episodes"]
        self.train_sampler = make_sampler(cfg, train_split, q_query=ep["q_query"], device=self.device,
                                          normalize=self.normalize, seed=cfg["seed"], training=True)
        self.val_sampler = make_sampler(cfg, val_split, q_query=ep["test_q_query"], device=self.device,
                                        normalize=self.normalize)
        h, w, c = train_split.image_shape
        self.data_info = {"in_channels": c, "image_size": h, "train": train_split.summary(), "val": val_split.summary(),
                          "fingerprints": {"train": train_split.content_fingerprint(), "val": val_split.content_fingerprint()}}
        self.init_report: Dict[str, Any] = {}
        self.learner = make_learner(cfg, c, h, report=self.init_report).to(self.device)
        self.dist.broadcast_module(self.learner)
        self.optimizer = make_optimizer(cfg, self.learner.parameters())
        self.scheduler = make_scheduler(cfg, self.optimizer, cfg["train"]["iterations"])
        self.val_episodes = self.val_sampler.fixed_episodes(cfg["train"]["val_episodes"], cfg["eval"]["seed"])
        self.step = 0
        self.pending_val = False  # the validation due at self.step has not run (yet)
        self.window: Dict[str, list] = {"loss": [], "acc": []}
        self.best: Dict[str, Any] = {"step": 0, "acc": -math.inf, "ci95": 0.0}
        self.guard: Optional[StopGuard] = None
        self.logger = JsonlLogger(self.out / "metrics.jsonl", tensorboard=self.out / "tensorboard" if cfg["tensorboard"]
                                  else None) if self.dist.is_main else None
        self.writes_files = self.dist.is_main

    # -- checkpoints

    def state(self) -> Dict[str, Any]:
        return {
            "metakd_version": __version__,
            "config": self.cfg,
            "step": self.step,
            "pending_val": self.pending_val,
            "window": {k: list(v) for k, v in self.window.items()},
            "learner": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "sampler": self.train_sampler.state_dict(),
            "rng": rng_state(),
            "best": dict(self.best),
            "normalize": None if self.normalize is None else tuple(tuple(float(v) for v in part) for part in self.normalize),
            "data": self.data_info,
        }

    def barrier(self, what: str) -> None:
        self.dist.barrier(what)

    def _log(self, record: Dict[str, Any]) -> None:
        self.log(record)

    def resume(self, path: Optional[Path] = None) -> None:
        """Continue exactly where ``path`` (default: output_dir/last.pt) stopped. In a distributed run
        rank 0 reads it and sends it to the others (no shared file system needed)."""
        path = Path(path) if path is not None else self.out / "last.pt"
        if self.dist.active:
            ckpt = self.dist.run_on_main(lambda: load_checkpoint(path, map_location="cpu"), f"reading {path}")
        else:
            ckpt = load_checkpoint(path, map_location=self.device)
        free = RESUME_FREE
        if self.cfg["train"]["lr_schedule"] == "cosine":  # its length is train.iterations
            free = tuple(k for k in RESUME_FREE if k != "train.iterations")
        diffs = config_differences(ckpt["config"], self.cfg, free)
        if not diffs and "data" in ckpt and ckpt["config"]["data"]["root"] != self.cfg["data"]["root"]:
            strip = lambda d: {k: v for k, v in d.items() if k != "source"}  # noqa: E731
            for split in ("train", "val"):
                if strip(ckpt["data"][split]) != strip(self.data_info[split]):
                    diffs.append(f"data.root: the {split} split at {self.cfg['data']['root']!r} differs from the one "
                                 f"trained on ({ckpt['data'][split]} vs {self.data_info[split]})")
        changed = data_differences(ckpt.get("data"), self.data_info, self.cfg["data"]["root"])
        if changed:
            raise MetakdError(f"cannot resume {path}: {'; '.join(changed)}; resume with the data the run was trained on")
        if diffs:
            raise MetakdError(f"checkpoint {path} was written by a different experiment config: {'; '.join(diffs)}. "
                              "Resume with the config it was trained with (only train.iterations, val_every, "
                              "checkpoint_every, log_every, eval.*, device, threads, output_dir and data.root may change)")
        self.learner.load_state_dict(ckpt["learner"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.train_sampler.load_state_dict(ckpt["sampler"])
        set_rng_state(ckpt["rng"])
        self.step = int(ckpt["step"])
        self.pending_val = bool(ckpt.get("pending_val", False))
        self.window = {k: list(v) for k, v in ckpt.get("window", {"loss": [], "acc": []}).items()}
        self.best = dict(ckpt["best"])
        if self.logger is not None:  # records after the checkpoint (and a validation it will rerun) are rewritten
            self.logger.truncate_after(self.step, drop_at_step=("val",) if self.pending_val else ())

    # -- loop (the shared StepLoop calls these hooks)

    def validate(self) -> Dict[str, Any]:
        fault_point("val", self.step)
        with _rng_untouched(self.device):
            res = evaluate_sharded(self.dist, self.learner, self.val_sampler, self.val_episodes,
                                   batch_size=self.cfg["eval"]["batch_size"], progress=self.progress, desc="validation",
                                   cache=self.cfg["eval"]["cache_features"])
        return res

    def train_step(self) -> Dict[str, float]:
        """One meta-iteration. Every rank draws the global meta-batch's episode indices and builds only
        its shard's images; gradients are averaged over ranks before the (identical) optimiser step."""
        t = self.cfg["train"]
        episodes = self.train_sampler.sample_episodes(t["meta_batch"])
        fault_point("sample", self.step + 1)
        batch = self.train_sampler.batch(episodes[self.shard])
        self.dist.seed_step(self.cfg["seed"], self.step)
        loss, metrics = self.learner.meta_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_gradients(self.learner.parameters())
        metrics = self.dist.average_metrics(metrics)
        if t["grad_clip"] is not None:
            metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.learner.parameters(), t["grad_clip"]))
        self.optimizer.step()
        fault_point("step", self.step + 1)
        if self.scheduler is not None:
            self.scheduler.step()
        self.dist.average_buffers(self.learner)
        return metrics

    def fit(self, resume: bool | str | Path = False, max_steps: Optional[int] = None) -> Dict[str, Any]:
        """Train up to ``train.iterations`` meta-iterations (or ``max_steps`` more, to stop early).

        resume: False, True (output_dir/last.pt) or a checkpoint path. SIGINT (Ctrl-C) and SIGTERM stop
        the run at the next step boundary (a validation in progress is abandoned and rerun on resume)
        and save last.pt there; previous signal handlers are restored on return.
        ``train.iterations: 0`` trains nothing: the initial weights (``model.init``) are validated and
        saved as best.pt / last.pt, so ``metakd eval`` evaluates a learner without meta-training.
        Returns the summary written to summary.json.
        """
        with StopGuard() as guard, run_lock(self.out, self.dist.is_main):
            self._prepared = False
            try:
                return self._fit(guard, resume, max_steps)
            except BaseException:
                if self._prepared and self.step == 0 and not resume:  # a new run that failed before its first step
                    self.dist.run_on_main(lambda: discard_new_run(self.out), "discarding the unstarted run")
                raise

    def stop_requested(self, guard: StopGuard) -> bool:
        """Whether any rank got a signal (agreed by all ranks, so they stop at the same step)."""
        if not self.dist.active:
            return guard.stopping
        return any(self.dist.all_gather_object(guard.stopping, "agreeing on stopping"))

    def finished(self) -> bool:
        return self.step >= self.cfg["train"]["iterations"]

    def pending(self) -> bool:
        return self.pending_val

    def after_step(self, metrics: Dict[str, float]) -> None:
        t = self.cfg["train"]
        self._tasks += t["meta_batch"]
        self.window["loss"].append(metrics["loss"])
        self.window["acc"].append(metrics["acc"])
        self._bar.update(1)
        diagnostics = {k: v for k, v in metrics.items() if k.startswith("msd_grad_")}  # measured steps only
        if diagnostics:
            self._log({"kind": "diagnostic", "step": self.step, **diagnostics})
        if self.step % t["log_every"] == 0 or self.step == self._stop_at:
            rate = self._tasks / max(time.perf_counter() - self._tic, 1e-9)
            rec = {"kind": "train", "step": self.step, "loss": sum(self.window["loss"]) / len(self.window["loss"]),
                   "acc": sum(self.window["acc"]) / len(self.window["acc"]), "tasks_per_s": rate,
                   "lr": self.optimizer.param_groups[0]["lr"]}
            self._log(rec)
            self._bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{100 * rec['acc']:.1f}", tasks_s=f"{rate:.1f}")
            self.window = {"loss": [], "acc": []}
            self._tic, self._tasks = time.perf_counter(), 0
        self.pending_val = self.step % t["val_every"] == 0 or self.step == t["iterations"]

    def boundary(self, guard: StopGuard) -> None:
        """The step boundary's work: the due validation (abandonable), best.pt, the periodic last.pt."""
        t = self.cfg["train"]
        if self.pending_val:
            if self.dist.active:  # a rank must not leave a collective the others are in
                res = self.validate()
            else:
                with guard.abandonable():
                    res = self.validate()
            self._log({"kind": "val", "step": self.step, "acc": res["acc"], "ci95": res["ci95"],
                       "episodes": res["episodes"]})
            if self.dist.is_main:
                self._bar.write(f"step {self.step}: validation {format_acc(res['acc'], res['ci95'])} "
                                f"({res['episodes']} episodes)")
            self.pending_val = False
            if res["acc"] > self.best["acc"]:
                self.best = {"step": self.step, "acc": res["acc"], "ci95": res["ci95"]}
                self.save("best.pt")
        if self.step % t["checkpoint_every"] == 0 and self.step > 0:
            self.save("last.pt")

    def stopped(self, guard: StopGuard, agreed: bool) -> None:
        self._bar.close()
        self.learner.train()  # an abandoned validation may have left it in eval mode
        if self.step == 0 and not self._resumed:
            raise MetakdError(f"interrupted ({guard.name}) before the first step; nothing to resume — start again")
        self.save("last.pt", sync=agreed)  # after an abandoned step the other ranks may be stuck in a collective
        raise self.stop_error(guard)

    def stop_error(self, guard: StopGuard) -> MetakdError:
        verb = "terminated (SIGTERM)" if guard.name == "SIGTERM" else "interrupted"
        pending = " (its validation reruns on resume)" if self.pending_val else ""
        return MetakdError(f"{verb} at step {self.step}{pending}; saved {self.out / 'last.pt'} — continue with --resume")

    def _fit(self, guard: StopGuard, resume: bool | str | Path, max_steps: Optional[int]) -> Dict[str, Any]:
        t = self.cfg["train"]
        if resume:
            self.resume(None if resume is True else Path(resume))
        self._resumed = bool(resume)
        self.dist.run_on_main(lambda: self._prepare_output(bool(resume)), f"preparing {self.out}")
        if self.init_report and self.dist.is_main and not resume:
            write_json(self.out / "init.json", self.init_report, what="model.init report")
            self._log({"kind": "init", "step": 0, "loaded": len(self.init_report["loaded"]),
                       "kept_initial": len(self.init_report["kept_initial"])})
        if t["iterations"] == 0 and not resume:  # no meta-training: validate the initial weights
            self.pending_val = True
        self._stop_at = t["iterations"] if max_steps is None else min(t["iterations"], self.step + max_steps)
        self.learner.train()
        self._bar = bar = tqdm(total=t["iterations"], initial=self.step, desc=f"train {self.cfg['name']}", unit="it",
                               disable=not self.progress, dynamic_ncols=True)
        self._tic, self._tasks = time.perf_counter(), 0
        self.run_steps(guard, budget=max_steps)
        bar.close()
        self.save("last.pt")
        if not self.dist.run_on_main(lambda: (self.out / "best.pt").exists(), "looking for best.pt"):
            self.save("best.pt")
        summary = {"name": self.cfg["name"], "step": self.step, "iterations": t["iterations"],
                   "best_val": self.best, "device": describe_device(self.device), "output_dir": str(self.out)}
        if self.init_report:
            summary["init"] = self.init_report
        if self.dist.active:
            summary["world_size"] = self.dist.world_size
        if self.dist.is_main:
            write_json(self.out / "summary.json", summary, what="run summary")
            records = self.logger.read()
            if records:
                plot_curves(records, self.out / "curves.png", title=self.cfg["name"])
        self.dist.barrier("finishing the run")
        if self.logger is not None:
            self.logger.close()
        return summary

    def _prepare_output(self, resumed: bool) -> None:
        """Rank 0: create output_dir, remove dead writers' temporaries, refuse to overwrite a run, write config.yaml."""
        prepare_run_folder(self.out, dump_config(self.cfg), resumed, resume_flag="resume (--resume)",
                           names=run_files(self.cfg["tensorboard"]))
        self._prepared = True

