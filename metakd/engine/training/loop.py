"""The step loop every trainer shares: meta-training (``train.Trainer``) and supervised classification
(``supervised.SupervisedTrainer``: ``metakd pretrain`` and both phases of ``metakd distill``).

A trainer is a ``StepLoop`` subclass that fills in the hooks:

- ``train_step()``: one optimiser step (its own ``fault_point("sample" / "step", ...)`` calls); returns
  the step's metrics. The loop then counts ``self.step`` and calls ``after_step(metrics)``
  (running averages, the log record, the progress bar, marking due work as pending).
- ``pending()`` / ``boundary(guard)``: the work due at a step boundary (a periodic evaluation, which
  runs inside ``guard.abandonable()`` and changes no training state; best.pt; the periodic last.pt).
  A pending boundary is part of the saved state, so a run stopped in an evaluation reruns it on resume.
- ``finished()``, ``state()`` (plain data only: checkpoints are read with weights_only=True),
  ``stop_error(guard)`` (the message naming where it stopped and ``--resume``).

What the loop guarantees for all of them: SIGINT / SIGTERM (``run_dir.StopGuard``) stop at the next
step boundary and save ``last.pt`` there, atomically (``metakd.atomic``, a second signal while saving
only prints a note), so the saved state is always that of a completed step and a resume continues
bit-exactly; a ``budget`` of steps stops early without a signal (the caller decides what to save).
Records go through ``metrics.JsonlLogger`` (metrics.jsonl, mirrored to TensorBoard when asked).
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple


from ...atomic import atomic_write
from ...errors import MetakdError
from ..runs import folder as run_dir
from ..runs.checkpoint import torch_save
from ..runs.folder import StopGuard
from ..runs.metrics import JsonlLogger


class StepLoop:
    """Base of the trainers; see the module docstring. Subclasses set ``out``, ``step``, ``logger``."""

    out: Path
    step: int = 0
    logger: Optional[JsonlLogger] = None
    guard: Optional[StopGuard] = None
    writes_files: bool = True  # False on the ranks of a distributed run other than 0

    # -- hooks
    def train_step(self) -> Dict[str, float]:
        raise NotImplementedError

    def after_step(self, metrics: Dict[str, float]) -> None:
        pass

    def pending(self) -> bool:
        return False

    def boundary(self, guard: StopGuard) -> None:
        pass

    def finished(self) -> bool:
        raise NotImplementedError

    def state(self) -> Dict[str, Any]:
        raise NotImplementedError

    def stop_error(self, guard: StopGuard) -> MetakdError:
        verb = "terminated (SIGTERM)" if guard.name == "SIGTERM" else "interrupted"
        return MetakdError(f"{verb} at step {self.step}; saved {self.out / 'last.pt'} — continue with --resume")

    def stop_requested(self, guard: StopGuard) -> bool:
        return guard.stopping

    def barrier(self, what: str) -> None:
        """Distributed trainers wait for every rank here; a single process does nothing."""

    # -- shared machinery
    def log(self, record: Dict[str, Any]) -> None:
        if self.logger is not None:
            self.logger.log(record)

    def save(self, name: str = "last.pt", sync: bool = True) -> Path:
        """``state()`` written atomically to ``out/name`` (only where ``writes_files``); signals while
        writing only print a note. With ``sync`` the other ranks wait until it is on disk."""
        path = self.out / name
        if self.writes_files:
            state = self.state()
            step = self.step

            def write(f: Any) -> None:
                torch_save(state, f)
                self.fault_point("save", step)

            if self.guard is not None:
                with self.guard.saving_file(str(path)):
                    atomic_write(path, write, what="checkpoint")
            else:
                atomic_write(path, write, what="checkpoint")
        if sync:
            self.barrier(f"saving {path}")
        return path

    def fault_point(self, phase: str, step: int) -> None:
        """The test hook (``run_dir.fault_point``), looked up through the trainer's module so tests can
        patch it there."""
        getattr(sys.modules[type(self).__module__], "fault_point", run_dir.fault_point)(phase, step)

    def stopped(self, guard: StopGuard, agreed: bool) -> None:
        """After a signal: save last.pt at this boundary and raise ``stop_error``."""
        self.save("last.pt", sync=agreed)
        raise self.stop_error(guard)

    def run_steps(self, guard: StopGuard, budget: Optional[int] = None) -> Tuple[bool, int]:
        """Steps until ``finished()`` or ``budget`` more steps; returns (finished, steps taken).

        A signal (``guard`` entered by the caller) stops at the next step boundary: an abandonable
        evaluation in progress is cut short and stays pending; then ``stopped`` saves and raises."""
        self.guard = guard
        taken, agreed = 0, True
        try:
            try:
                if self.pending():
                    self.boundary(guard)
                while not self.finished() and (budget is None or taken < budget) and not self.stop_requested(guard):
                    metrics = self.train_step()
                    self.step += 1
                    taken += 1
                    self.after_step(metrics)
                    self.boundary(guard)
            except KeyboardInterrupt:  # an abandoned evaluation, or a KeyboardInterrupt raised by code
                guard.signum = guard.signum or signal.SIGINT
                agreed = False
            if guard.stopping:
                self.stopped(guard, agreed)
            return self.finished(), taken
        finally:
            self.guard = None
