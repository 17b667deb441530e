"""``metakd distill``: teacher -> student knowledge distillation for image classification.

One command runs both phases in ``output_dir``:

    teacher/  (skipped when ``teacher.checkpoint`` is given) CE training of ``teacher.arch``;
              teacher.pt (the frozen teacher: weights, arch, classes, normalisation, test accuracy),
              last.pt (resume point), metrics.jsonl, result.json
    student/  ``student.arch`` trained with ``distill.method``:
              kd       ce_weight·CE + kd_weight·KD_T                        (Hinton KD, fixed T)
              kd_rank  the same + rank_weight·(1 − τ̃)                        (RKKD, Kendall rank loss)
              mkd      CE + KD with teacher/student temperatures meta-learned by ``mkd_step``
              mkd_rank mkd plus the rank term
              student.pt, last.pt, metrics.jsonl, result.json
    result.json  final test top-1 of teacher and student, method, temperatures, seconds, device.

Training: SGD (momentum, weight decay), step decay by ``lr_gamma`` at ``lr_milestones`` epochs;
the teacher sees the same augmented batch as the student, in eval mode, without gradient.
Exact resume: the batch order of an epoch is a pure function of (seed, epoch); augmentation and
MKD held-out draws come from generators whose states are checkpointed with the model, optimiser,
scheduler, temperatures, position inside the epoch and the global RNG states, so a run stopped at
any step (``max_steps``, Ctrl-C, SIGTERM) and resumed gives bit-identical weights on the same device.
A signal stops the run at the next step boundary (an end-of-epoch test evaluation in progress is
abandoned and rerun on resume) and saves last.pt there. Both phases run on the supervised trainer that
``metakd pretrain`` uses (``supervised.SupervisedTrainer``, on the step loop ``loop.StepLoop`` that
``metakd train`` shares); the config schema is ``job_config.DISTILL_SCHEMA``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import __version__
from ...atomic import atomic_write, remove_stale_temps, write_json
from ...config import dump_config
from ...distill import MetaTemperatures, kd_loss, mkd_step, rank_loss
from ...errors import ConfigError, MetakdError
from ...models import build_backbone
from ..assembly import make_optimizer, make_scheduler, resolve_device
from ..runs.checkpoint import find_checkpoint, safe_load, save_checkpoint
from ..runs.folder import (MANIFEST, RESUME_FREE_BASE, StopGuard, check_output_dir, default_output_dir, fault_point,
                           make_output_dir, metakd_names_in, record_outputs, run_lock)
from .distill_data import ClassificationData, heldout_split, load_classification, prepare
from .supervised import SupervisedTrainer

TEACHER_KIND = "metakd-distill-teacher"
# Config keys a resume may change (they change no trained weight); any other difference is refused.
RESUME_FREE = RESUME_FREE_BASE + tuple(f"train.{k}" for k in ("eval_every", "log_every", "checkpoint_every",
                                                               "eval_batch_size"))


def _write_json(path: Path, obj: Dict[str, Any]) -> None:
    write_json(path, obj, what="result file")


@torch.no_grad()
def test_correct(model: nn.Module, data: ClassificationData, device: torch.device, batch_size: int,
                 part: str = "test") -> Tensor:
    """Per-item top-1 correctness (N,) bool of ``model`` on the ``part`` ("test" or "val") of ``data`` (eval
    mode; restores the mode): the paired comparisons of two students use it item by item."""
    xs, ys = (data.val_x, data.val_y) if part == "val" else (data.test_x, data.test_y)
    was = model.training
    model.eval()
    out = []
    for lo in range(0, len(ys), batch_size):
        x = prepare(xs[lo:lo + batch_size], data.mean, data.std, device)
        out.append(model(x).argmax(-1).cpu() == ys[lo:lo + batch_size])
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def test_accuracy(model: nn.Module, data: ClassificationData, device: torch.device, batch_size: int,
                  part: str = "test") -> float:
    """Top-1 accuracy of ``model`` on the ``part`` ("test" or "val") of ``data``."""
    correct = test_correct(model, data, device, batch_size, part)
    return int(correct.sum()) / max(1, len(correct))  # an exact ratio, as before per-item results existed


class FrozenTeacher(nn.Module):
    """A trained classifier in eval mode without gradient; re-normalises the student's inputs when the
    teacher was trained with other normalisation statistics. x (B, C, H, W) -> logits (B, classes)."""

    def __init__(self, model: nn.Module, mean: Tensor, std: Tensor, student_mean: Tensor, student_std: Tensor):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        scale = student_std / std
        self.register_buffer("scale", scale[None, :, None, None].clone())
        self.register_buffer("shift", ((student_mean - mean) / std)[None, :, None, None].clone())

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.model(x * self.scale + self.shift)


TEACHER_KEYS = ("arch", "options", "model", "class_names", "in_channels", "image_size", "mean", "std")


def load_teacher(path: Path, cfg: Dict[str, Any], data: ClassificationData) -> Tuple[FrozenTeacher, Dict[str, Any]]:
    """The frozen teacher in a ``teacher.pt`` (or a teacher run folder), checked against the data."""
    path = find_checkpoint(path, "teacher", key="teacher.checkpoint",
                           hint="give the teacher.pt written by `metakd distill` (output_dir/teacher/teacher.pt) or "
                                "set teacher.checkpoint=null to train the teacher first")
    try:
        ckpt = safe_load(path, what="teacher checkpoint")
    except MetakdError as exc:
        raise ConfigError(f"teacher.checkpoint: {exc}") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != TEACHER_KIND:
        raise ConfigError(f"teacher.checkpoint: {path} is not a distillation teacher (expected the teacher.pt "
                          "written by `metakd distill`)")
    missing = [k for k in TEACHER_KEYS if k not in ckpt]
    if missing:
        raise ConfigError(f"teacher.checkpoint: {path} lacks the key(s) {', '.join(missing)} of a distillation teacher "
                          f"(expected {', '.join(TEACHER_KEYS)}); is it complete?")
    if ckpt["class_names"] != data.class_names:
        raise ConfigError(f"teacher.checkpoint: {path} was trained on {len(ckpt['class_names'])} classes that differ "
                          f"from this dataset's {data.num_classes} classes")
    if ckpt["in_channels"] != data.in_channels:
        raise ConfigError(f"teacher.checkpoint: {path} expects {ckpt['in_channels']}-channel images, the data has "
                          f"{data.in_channels}")
    if cfg["teacher"]["arch"] != ckpt["arch"]:
        raise ConfigError(f"teacher.arch={cfg['teacher']['arch']!r} but {path} holds a {ckpt['arch']!r}")
    model = build_backbone(ckpt["arch"], len(ckpt["class_names"]), in_channels=ckpt["in_channels"],
                           image_size=ckpt["image_size"], **ckpt["options"])
    model.load_state_dict(ckpt["model"])
    teacher = FrozenTeacher(model, torch.tensor(ckpt["mean"]), torch.tensor(ckpt["std"]), data.mean, data.std)
    return teacher, ckpt


class PhaseTrainer(SupervisedTrainer):
    """One classifier of the distillation job on the shared supervised trainer: the teacher (role "teacher",
    CE) or the student (role "student", ``distill.method``)."""

    command = "distill"

    def __init__(self, cfg: Dict[str, Any], role: str, data: ClassificationData, device: torch.device, out: Path,
                 teacher: Optional[FrozenTeacher] = None, progress: bool = True):
        t = cfg["train"]
        spec = cfg[role]
        epochs = (cfg["teacher"]["epochs"] or t["epochs"]) if role == "teacher" else t["epochs"]
        lr = (cfg["teacher"]["lr"] or t["lr"]) if role == "teacher" else t["lr"]
        seed = cfg["seed"] + (0 if role == "student" else 7919)
        torch.manual_seed(seed)
        model = build_backbone(spec["arch"], data.num_classes, in_channels=data.in_channels,
                               image_size=data.image_size, **spec["options"]).to(device)
        optimizer = make_optimizer(cfg, model.parameters(), lr=lr)
        milestones = t["lr_milestones"]
        if role == "teacher" and cfg["teacher"]["lr_milestones"] is not None:
            milestones = cfg["teacher"]["lr_milestones"]
        scheduler = make_scheduler(cfg, optimizer, epochs, milestones)
        self.data = data
        self.teacher = teacher.to(device) if teacher is not None else None
        self.method = cfg["distill"]["method"] if role == "student" else "ce"
        train_idx = torch.arange(len(data.train_y))
        self.heldout_idx: Optional[Tensor] = None
        self.temps: Optional[MetaTemperatures] = None
        if self.method.startswith("mkd"):
            m, d = cfg["mkd"], cfg["distill"]
            self.temps = MetaTemperatures(d["temperature"], d["temperature"], m["t_min"], m["t_max"], shared=m["shared"]).to(device)
            self.temp_optimizer = torch.optim.Adam([p for p in self.temps.parameters() if p.requires_grad], lr=m["lr"])
            if m["heldout"] == "split":
                train_idx, self.heldout_idx = heldout_split(data.train_y, m["heldout_fraction"], seed)
            else:
                self.heldout_idx = torch.arange(len(data.train_y))
        if len(train_idx) < 2:
            raise ConfigError(f"{role}: need at least 2 training images, got {len(train_idx)}")
        self.aug_gen = torch.Generator().manual_seed(seed + 1)
        self.heldout_gen = torch.Generator().manual_seed(seed + 2)
        super().__init__(cfg, kind="metakd-distill-state", role=role, model=model, optimizer=optimizer,
                         scheduler=scheduler, train_idx=train_idx, epochs=epochs, seed=seed, device=device, out=out,
                         resume_free=RESUME_FREE, progress=progress, label=f"{role} {spec['arch']}")

    @property
    def eval_part(self) -> str:
        """What end_of_epoch scores: the validation part when there is one (the test part is then scored once,
        in final_record), else the test part."""
        return "val" if self.data.val_y is not None else "test"

    # -- checkpoint parts of this job
    def extra_state(self) -> Dict[str, Any]:
        return {"aug_gen": self.aug_gen.get_state(), "heldout_gen": self.heldout_gen.get_state(),
                "temps": None if self.temps is None else self.temps.state_dict(),
                "temp_optimizer": None if self.temps is None else self.temp_optimizer.state_dict()}

    def load_extra(self, ckpt: Dict[str, Any]) -> None:
        self.aug_gen.set_state(ckpt["aug_gen"])
        self.heldout_gen.set_state(ckpt["heldout_gen"])
        if self.temps is not None:
            self.temps.load_state_dict(ckpt["temps"])
            self.temp_optimizer.load_state_dict(ckpt["temp_optimizer"])

    # -- one step
    def _batch(self, idx: Tensor, augment: bool) -> Tuple[Tensor, Tensor]:
        d = self.cfg["data"]
        x = prepare(self.data.train_x[idx], self.data.mean, self.data.std, self.device,
                    d["augment"] if augment else "none", d["crop_padding"], self.aug_gen)
        return x, self.data.train_y[idx].to(self.device)

    def batch(self, idx: Tensor) -> Tuple[Tensor, Tensor]:
        return self._batch(idx, augment=True)

    def _rank_kwargs(self) -> Dict[str, Any]:
        d = self.cfg["distill"]
        out = {"form": d["rank_form"], "k": d["rank_k"], "beta": d["rank_beta"], "subset": d["rank_subset"],
               "fraction": d["rank_fraction"]}
        if d.get("rank_k_scale", "absolute") != "absolute":  # the loss's default
            out["k_scale"] = d["rank_k_scale"]
        return out

    def _rank_weight(self) -> float:
        d = self.cfg["distill"]
        if not self.method.endswith("rank"):
            return 0.0
        return d["kd_weight"] if d["rank_weight"] is None else d["rank_weight"]

    def objective(self, x: Tensor, y: Tensor, idx: Tensor):
        if self.role == "teacher":
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            return loss, {"ce": float(loss.detach())}, logits
        d = self.cfg["distill"]
        t_logits = self.teacher(x)
        if self.temps is not None and self.step % self.cfg["mkd"]["every"] == 0:
            ho = self.heldout_idx[torch.randint(len(self.heldout_idx), (len(idx),), generator=self.heldout_gen)]
            xh, yh = self._batch(ho, augment=False)
            lookahead = self.cfg["mkd"]["lookahead_lr"] or self.optimizer.param_groups[0]["lr"]
            out = mkd_step(self.model, t_logits, (x, y), (xh, yh), self.temps, self.optimizer, self.temp_optimizer,
                           lookahead, d["ce_weight"], d["kd_weight"], self._rank_weight(), self._rank_kwargs(),
                           d["kd_scale"], self.cfg["mkd"]["lookahead_ce"])
            return None, dict(out), None  # mkd_step steps itself and does not expose its logits: no train acc
        if self.temps is not None:
            with torch.no_grad():
                tt, ts = self.temps()
        else:
            tt = ts = d["temperature"]
        logits = self.model(x)
        ce = F.cross_entropy(logits, y)
        kd = kd_loss(logits, t_logits, ts, tt, scale=d["kd_scale"])
        loss = d["ce_weight"] * ce + d["kd_weight"] * kd
        parts = {"ce": float(ce.detach()), "kd": float(kd.detach())}
        rw = self._rank_weight()
        if rw:
            rk = rank_loss(logits, t_logits, **self._rank_kwargs())
            loss = loss + rw * rk
            parts["rank"] = float(rk.detach())
        return loss, parts, logits

    # -- end of an epoch
    def end_of_epoch(self, guard: StopGuard) -> Dict[str, Any]:
        with guard.abandonable():
            fault_point("val", self.epoch)
            acc = test_accuracy(self.model, self.data, self.device, self.cfg["train"]["eval_batch_size"], self.eval_part)
        self.last_eval = {f"{self.eval_part}_acc": acc}
        return dict(self.last_eval)

    def epoch_extras(self) -> Dict[str, Any]:
        if self.temps is None:
            return {}
        tt, ts = self.temps()
        return {"t_teacher": float(tt.detach()), "t_student": float(ts.detach())}

    def epoch_note(self, rec: Dict[str, Any]) -> str:
        part = self.eval_part
        return ((f", {part} top-1 {100 * rec[part + '_acc']:.2f}%" if f"{part}_acc" in rec else "")
                + (f", T_t {rec['t_teacher']:.2f} T_s {rec['t_student']:.2f}" if "t_teacher" in rec else ""))

    def final_record(self) -> Dict[str, Any]:
        records = self.logger.read()
        key = f"{self.eval_part}_acc"
        epochs = [r for r in records if r["kind"] == "epoch" and r.get(key) is not None]
        out = {"arch": self.cfg[self.role]["arch"], "epochs": self.epochs, "steps": self.step,
               key: self.last_eval.get(key), f"best_{key}": max((r[key] for r in epochs), default=None),
               "train_images": len(self.train_idx), "test_images": len(self.data.test_y),
               "seconds": sum(r["seconds"] for r in records if r["kind"] == "epoch")}
        correct = test_correct(self.model, self.data, self.device, self.cfg["train"]["eval_batch_size"])
        out["test_correct"] = correct.int().tolist()  # per test item, for paired comparisons
        if self.eval_part == "val":  # the test part, once, with the final weights
            out["test_acc"] = int(correct.sum()) / max(1, len(correct))
            out["val_images"] = len(self.data.val_y)
        out.update(self.epoch_extras())
        return out


def run_distill(cfg: Dict[str, Any], output_dir: Optional[Path] = None, resume: bool = False,
                progress: bool = True, max_steps: Optional[int] = None) -> Dict[str, Any]:
    """Run (or continue) the teacher and student phases; returns the dict written to result.json.

    max_steps: stop after this many optimiser steps in this call (teacher and student together),
    saving last.pt of the phase in progress; the result then has ``"finished": false``.
    SIGINT / SIGTERM: last.pt of the phase in progress is saved at a step boundary, then MetakdError.
    """
    out = Path(output_dir) if output_dir is not None else default_output_dir(cfg)
    device = resolve_device(cfg["device"])
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    check_output_dir(out)
    with run_lock(out):
        return _run_distill(cfg, out, device, resume, progress, max_steps)


def _run_distill(cfg: Dict[str, Any], out: Path, device: torch.device, resume: bool, progress: bool,
                 max_steps: Optional[int]) -> Dict[str, Any]:
    found = metakd_names_in(out)
    if not resume and found:
        raise MetakdError(f"{out} already holds a distillation run (metakd files {', '.join(found[:6])}): pass --resume "
                          "to continue it, or choose another output_dir; nothing was changed")
    if cfg["teacher"]["checkpoint"] is not None and not Path(cfg["teacher"]["checkpoint"]).exists():
        raise ConfigError(f"teacher.checkpoint: {cfg['teacher']['checkpoint']} does not exist")
    start = time.perf_counter()
    data = load_classification(cfg)
    with StopGuard() as guard:
        try:
            return _run_phases(cfg, out, data, device, guard, resume, progress, max_steps, start)
        except KeyboardInterrupt:  # an abandoned evaluation outside a phase: nothing to save
            verb = "terminated (SIGTERM)" if guard.name == "SIGTERM" else "interrupted"
            raise MetakdError(f"{verb}; the saved phases in {out} are complete — continue with --resume") from None


def _run_phases(cfg: Dict[str, Any], out: Path, data: ClassificationData, device: torch.device, guard: StopGuard,
                resume: bool, progress: bool, budget: Optional[int], start: float) -> Dict[str, Any]:
    for folder in (out, out / "teacher", out / "student"):
        remove_stale_temps(folder)
    make_output_dir(out)
    record_outputs(out, [MANIFEST, "config.yaml", "result.json", "teacher/", "student/"], job="distill")
    atomic_write(out / "config.yaml", dump_config(cfg), what="run config")
    result: Dict[str, Any] = {"name": cfg["name"], "method": cfg["distill"]["method"], "dataset": cfg["data"]["dataset"],
                              "classes": data.num_classes, "data": data.info, "seed": cfg["seed"],
                              "device": str(device), "output_dir": str(out)}

    # teacher
    if cfg["teacher"]["checkpoint"] is not None:
        teacher_path = Path(cfg["teacher"]["checkpoint"])
    else:
        teacher_path = out / "teacher" / "teacher.pt"
        if not teacher_path.exists():
            tdir = out / "teacher"
            make_output_dir(tdir)
            trainer = PhaseTrainer(cfg, "teacher", data, device, tdir, progress=progress)
            if resume and (tdir / "last.pt").exists():
                trainer.resume()
            elif not resume:
                (tdir / "metrics.jsonl").unlink(missing_ok=True)
            done, taken = trainer.fit(budget, guard)
            budget = None if budget is None else budget - taken
            if not done:
                return {**result, "finished": False, "phase": "teacher", "step": trainer.step}
            rec = trainer.final_record()
            with guard.saving_file(str(teacher_path)):
                _write_json(tdir / "result.json", rec)
                save_checkpoint(teacher_path, {
                    "kind": TEACHER_KIND, "metakd_version": __version__, "arch": cfg["teacher"]["arch"],
                    "options": cfg["teacher"]["options"], "model": trainer.model.state_dict(),
                    "class_names": data.class_names, "in_channels": data.in_channels, "image_size": data.image_size,
                    "mean": data.mean.tolist(), "std": data.std.tolist(), "test_acc": rec["test_acc"], "config": cfg})
            if guard.stopping:
                verb = "terminated (SIGTERM)" if guard.name == "SIGTERM" else "interrupted"
                raise MetakdError(f"{verb} after the teacher phase; saved {teacher_path} — continue with --resume")
    teacher, tckpt = load_teacher(teacher_path, cfg, data)
    with guard.abandonable():
        teacher_acc = test_accuracy(teacher, data, device, cfg["train"]["eval_batch_size"])
        teacher_val = None if data.val_y is None else test_accuracy(teacher, data, device,
                                                                    cfg["train"]["eval_batch_size"], "val")
    result["teacher"] = {"arch": tckpt["arch"], "checkpoint": str(teacher_path), "test_acc": teacher_acc,
                         **({} if teacher_val is None else {"val_acc": teacher_val})}

    # student
    sdir = out / "student"
    make_output_dir(sdir)
    trainer = PhaseTrainer(cfg, "student", data, device, sdir, teacher=teacher, progress=progress)
    if resume and (sdir / "last.pt").exists():
        trainer.resume()
    elif not resume:
        (sdir / "metrics.jsonl").unlink(missing_ok=True)
    done, _ = trainer.fit(budget, guard)
    if not done:
        return {**result, "finished": False, "phase": "student", "step": trainer.step}
    rec = trainer.final_record()
    with guard.saving_file(str(sdir / "student.pt")):
        _write_json(sdir / "result.json", rec)
        save_checkpoint(sdir / "student.pt", {
            "kind": "metakd-distill-student", "metakd_version": __version__, "arch": cfg["student"]["arch"],
            "options": cfg["student"]["options"], "model": trainer.model.state_dict(),
            "class_names": data.class_names, "in_channels": data.in_channels, "image_size": data.image_size,
            "mean": data.mean.tolist(), "std": data.std.tolist(), "test_acc": rec["test_acc"], "config": cfg})
        result.update({"student": rec, "finished": True, "seconds_this_call": time.perf_counter() - start})
        _write_json(out / "result.json", result)
    return result
