"""Meta-training: progress bar, periodic validation on fixed episodes, best checkpoint, exact resume."""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import torch
from tqdm.auto import tqdm

from .. import __version__
from ..config import dump_config
from ..errors import MetakdError
from .build import make_learner, make_optimizer, make_sampler, make_scheduler, normalization, resolve_device, split_for
from .checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state
from .evaluate import evaluate_episodes
from .metrics import JsonlLogger, format_acc, plot_curves


def default_output_dir(cfg: Dict[str, Any]) -> Path:
    return Path(cfg["output_dir"] or Path("runs") / cfg["name"])


@contextmanager
def _rng_untouched(device: torch.device) -> Iterator[None]:
    """Validation must not consume training randomness, or a resumed run would diverge."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


class Trainer:
    """Meta-trains the learner a config describes.

    Files in ``output_dir``: config.yaml, metrics.jsonl (one record per log / validation), last.pt
    (every ``train.checkpoint_every`` steps, at interruption and at the end), best.pt (highest
    validation accuracy), curves.png, summary.json.
    """

    def __init__(self, cfg: Dict[str, Any], output_dir: Optional[Path] = None, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.out = Path(output_dir) if output_dir is not None else default_output_dir(cfg)
        self.device = resolve_device(cfg["device"])
        if cfg["threads"]:
            torch.set_num_threads(cfg["threads"])
        torch.manual_seed(cfg["seed"])
        train_split = split_for(cfg, "train")
        val_split = split_for(cfg, "val")
        self.normalize = normalization(cfg, train_split)
        ep = cfg["episodes"]
        self.train_sampler = make_sampler(cfg, train_split, q_query=ep["q_query"], device=self.device,
                                          normalize=self.normalize, seed=cfg["seed"], training=True)
        self.val_sampler = make_sampler(cfg, val_split, q_query=ep["test_q_query"], device=self.device,
                                        normalize=self.normalize)
        h, w, c = train_split.image_shape
        self.data_info = {"in_channels": c, "image_size": h, "train": train_split.summary(), "val": val_split.summary()}
        self.learner = make_learner(cfg, c, h).to(self.device)
        self.optimizer = make_optimizer(cfg, self.learner.parameters())
        self.scheduler = make_scheduler(cfg, self.optimizer)
        self.val_episodes = self.val_sampler.fixed_episodes(cfg["train"]["val_episodes"], cfg["eval"]["seed"])
        self.step = 0
        self.best: Dict[str, Any] = {"step": 0, "acc": -math.inf, "ci95": 0.0}
        self.logger = JsonlLogger(self.out / "metrics.jsonl")

    # -- checkpoints

    def state(self) -> Dict[str, Any]:
        return {
            "metakd_version": __version__,
            "config": self.cfg,
            "step": self.step,
            "learner": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "sampler": self.train_sampler.state_dict(),
            "rng": rng_state(),
            "best": dict(self.best),
            "normalize": self.normalize,
            "data": self.data_info,
        }

    def save(self, name: str) -> Path:
        return save_atomic(self.state(), self.out / name)

    def resume(self, path: Optional[Path] = None) -> None:
        """Continue exactly where ``path`` (default: output_dir/last.pt) stopped."""
        path = Path(path) if path is not None else self.out / "last.pt"
        ckpt = load_checkpoint(path, map_location=self.device)
        mine, theirs = dict(self.cfg), dict(ckpt["config"])
        for key in ("train", "device", "output_dir", "eval"):
            mine.pop(key, None), theirs.pop(key, None)
        if mine != theirs:
            raise MetakdError(f"checkpoint {path} was written by a different experiment config (data, episodes, model "
                              "or learner differ); resume with the config it was trained with")
        self.learner.load_state_dict(ckpt["learner"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.train_sampler.load_state_dict(ckpt["sampler"])
        set_rng_state(ckpt["rng"])
        self.step = int(ckpt["step"])
        self.best = dict(ckpt["best"])
        self.logger.truncate_after(self.step)

    # -- loop

    def validate(self) -> Dict[str, Any]:
        with _rng_untouched(self.device):
            res = evaluate_episodes(self.learner, self.val_sampler, self.val_episodes,
                                    batch_size=self.cfg["eval"]["batch_size"], progress=self.progress, desc="validation")
        return res

    def train_step(self) -> Dict[str, float]:
        t = self.cfg["train"]
        batch = self.train_sampler.sample(t["meta_batch"])
        loss, metrics = self.learner.meta_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t["grad_clip"] is not None:
            metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.learner.parameters(), t["grad_clip"]))
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return metrics

    def fit(self, resume: bool | str | Path = False, max_steps: Optional[int] = None) -> Dict[str, Any]:
        """Train up to ``train.iterations`` meta-iterations (or ``max_steps`` more, to stop early).

        resume: False, True (output_dir/last.pt) or a checkpoint path. Ctrl-C saves last.pt first.
        Returns the summary written to summary.json.
        """
        t = self.cfg["train"]
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume(None if resume is True else Path(resume))
        elif (self.out / "last.pt").exists():
            raise MetakdError(f"{self.out} already holds a run (last.pt): pass resume (--resume) to continue it, "
                              "or choose another output_dir")
        else:
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
        (self.out / "config.yaml").write_text(dump_config(self.cfg))
        stop_at = t["iterations"] if max_steps is None else min(t["iterations"], self.step + max_steps)
        self.learner.train()
        window: Dict[str, list] = {"loss": [], "acc": []}
        bar = tqdm(total=t["iterations"], initial=self.step, desc=f"train {self.cfg['name']}", unit="it",
                   disable=not self.progress, dynamic_ncols=True)
        tic, tasks = time.perf_counter(), 0
        try:
            while self.step < stop_at:
                metrics = self.train_step()
                self.step += 1
                tasks += t["meta_batch"]
                window["loss"].append(metrics["loss"])
                window["acc"].append(metrics["acc"])
                bar.update(1)
                if self.step % t["log_every"] == 0 or self.step == stop_at:
                    rate = tasks / max(time.perf_counter() - tic, 1e-9)
                    rec = {"kind": "train", "step": self.step, "loss": sum(window["loss"]) / len(window["loss"]),
                           "acc": sum(window["acc"]) / len(window["acc"]), "tasks_per_s": rate,
                           "lr": self.optimizer.param_groups[0]["lr"]}
                    self.logger.log(rec)
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{100 * rec['acc']:.1f}", tasks_s=f"{rate:.1f}")
                    window = {"loss": [], "acc": []}
                    tic, tasks = time.perf_counter(), 0
                if self.step % t["val_every"] == 0 or self.step == t["iterations"]:
                    res = self.validate()
                    self.logger.log({"kind": "val", "step": self.step, "acc": res["acc"], "ci95": res["ci95"],
                                     "episodes": res["episodes"]})
                    bar.write(f"step {self.step}: validation {format_acc(res['acc'], res['ci95'])} "
                              f"({res['episodes']} episodes)")
                    if res["acc"] > self.best["acc"]:
                        self.best = {"step": self.step, "acc": res["acc"], "ci95": res["ci95"]}
                        self.save("best.pt")
                if self.step % t["checkpoint_every"] == 0:
                    self.save("last.pt")
        except KeyboardInterrupt:
            self.save("last.pt")
            bar.close()
            raise MetakdError(f"interrupted at step {self.step}; saved {self.out / 'last.pt'} — continue with --resume") from None
        bar.close()
        self.save("last.pt")
        if not (self.out / "best.pt").exists():
            self.save("best.pt")
        summary = {"name": self.cfg["name"], "step": self.step, "iterations": t["iterations"],
                   "best_val": self.best, "device": describe_device(self.device), "output_dir": str(self.out)}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        records = self.logger.read()
        if records:
            plot_curves(records, self.out / "curves.png", title=self.cfg["name"])
        return summary


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    import platform
    import os

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__})"
