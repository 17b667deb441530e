"""GradientLearner: the MAML family's shared machinery, over the functional core.

Subclasses override up to three hooks: ``adapted_names()`` (which parameters the inner loop
moves), ``inner_lr(name)`` (a float or a tensor of the parameter's shape, which may itself be
meta-learned) and the ``first_order`` flag. Everything else follows:

    fast = adapt(support_x, support_y, training)      # dict name -> tensor
    logits = predict(fast, query_x)                    # task_logits

Second order means the inner gradients are taken with ``create_graph=True`` in training; at
evaluation the inner loop runs without it and its result is detached.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, ClassVar, ContextManager, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.episode import EpisodeBatch
from ..errors import ConfigError
from .base import MetaLearner, check_batch, check_query_logits
from .batched import auto_chunk, batched_logits, vmap_blocker
from .compiled import COMPILE_MODES, CompiledInner, first_order_adapt, first_order_batched_logits
from .functional import Params, forward, inner_loop, select_names

TASK_BATCHING = ("off", "vmap", "auto")
AMP = ("off", "bf16")


def _positive_number(learner: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"option {key}={value!r} of learner {learner!r} must be a positive number")
    return float(value)


def _steps(learner: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"option {key}={value!r} of learner {learner!r} must be an integer >= 0")
    return value


class GradientLearner(MetaLearner):
    """A learner whose task adaptation is a few SGD steps on the support loss.

    Options: inner_lr (0.01), train_steps (5, inner steps in meta_loss), test_steps (10, in
    evaluate), first_order (False), adapt ("all" | "head" | "body" | list of parameter-name
    prefixes), head_name ("head", the prefix of the classifier's parameters).

    Performance options (results equal within float rounding):
    task_batching ("auto"): "off" loops over tasks; "vmap" runs the inner loops of all tasks as one
        vectorised computation (``batched.py``); "auto" is "vmap" on CUDA and "off" on the CPU
        (where vmap measured slower, see benchmarks/speed_suite.py). A model with running-statistics
        BatchNorm in train() mode, checkpoint_inner, or a subclass overriding adapt/predict/task_logits
        falls back to the loop (with a warning when "vmap" was asked for).
    task_chunk (None): tasks vectorised at once; None: all on the CPU, on CUDA what fits in free memory.
    amp ("off"): "bf16" runs forward computations under torch.autocast(bfloat16) (CUDA; CPU for tests).
    checkpoint_inner (False): recompute the activations of each inner step's forward in the backward
        passes instead of keeping them (sequential path; works with second order).
    compile (False): torch.compile the inner steps and query forward of evaluation and first-order
        training (``compiled.py``); second-order training stays eager, since torch.compile
        (aot_autograd, torch 2.14) has no double backward. Each new input shape compiles once (tens of
        seconds); off by default because that cost only pays back over long runs.
    compile_mode ("default"): the torch.compile mode, e.g. "reduce-overhead" (CUDA graphs) on a GPU.
    """

    OPTIONS: ClassVar[Dict[str, Any]] = {
        "inner_lr": 0.01, "train_steps": 5, "test_steps": 10, "first_order": False, "adapt": "all", "head_name": "head",
        "task_batching": "auto", "task_chunk": None, "amp": "off", "checkpoint_inner": False,
        "compile": False, "compile_mode": "default",
    }
    ADAPT: ClassVar[Any] = "all"  # used when "adapt" is not among a subclass's OPTIONS

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(model, **options)
        o = self.options
        self.lr = _positive_number(self.NAME, "inner_lr", o["inner_lr"])
        self.train_steps = _steps(self.NAME, "train_steps", o["train_steps"])
        self.test_steps = _steps(self.NAME, "test_steps", o["test_steps"])
        self.first_order = o.get("first_order", False)
        if not isinstance(self.first_order, bool):
            raise ConfigError(f"option first_order={self.first_order!r} of learner {self.NAME!r} must be true or false")
        self.head_name = o["head_name"]
        if not isinstance(self.head_name, str) or not self.head_name:
            raise ConfigError(f"option head_name={self.head_name!r} of learner {self.NAME!r} must be a parameter-name prefix")
        named = [n for n, p in model.named_parameters() if p.requires_grad]
        self._adapted = select_names(named, o.get("adapt", self.ADAPT), self.head_name)
        self.task_batching = o.get("task_batching", "auto")
        if self.task_batching not in TASK_BATCHING:
            raise ConfigError(f"option task_batching={self.task_batching!r} of learner {self.NAME!r} must be one of "
                              f"{', '.join(TASK_BATCHING)}")
        self.task_chunk = o.get("task_chunk")
        if self.task_chunk is not None and (isinstance(self.task_chunk, bool) or not isinstance(self.task_chunk, int)
                                            or self.task_chunk < 1):
            raise ConfigError(f"option task_chunk={self.task_chunk!r} of learner {self.NAME!r} must be null "
                              "(automatic) or an integer >= 1")
        self.amp = o.get("amp", "off")
        if self.amp not in AMP:
            raise ConfigError(f"option amp={self.amp!r} of learner {self.NAME!r} must be one of {', '.join(AMP)}")
        self.checkpoint_inner = o.get("checkpoint_inner", False)
        if not isinstance(self.checkpoint_inner, bool):
            raise ConfigError(f"option checkpoint_inner={self.checkpoint_inner!r} of learner {self.NAME!r} must be "
                              "true or false")
        if self.checkpoint_inner and self.task_batching == "vmap":
            raise ConfigError(f"learner {self.NAME!r}: checkpoint_inner=true works on the sequential path only; "
                              "set task_batching to 'off' or 'auto'")
        self.compile = o.get("compile", False)
        if not isinstance(self.compile, bool):
            raise ConfigError(f"option compile={self.compile!r} of learner {self.NAME!r} must be true or false")
        self.compile_mode = o.get("compile_mode", "default")
        if self.compile_mode not in COMPILE_MODES:
            raise ConfigError(f"option compile_mode={self.compile_mode!r} of learner {self.NAME!r} must be one of "
                              f"{', '.join(COMPILE_MODES)}")
        self._compiled: Optional[CompiledInner] = None
        self._eager: Optional[CompiledInner] = None
        self._chunk_cache: Dict[Any, int] = {}
        self._warned: set = set()

    # Hooks -----------------------------------------------------------------------------------
    def adapted_names(self) -> List[str]:
        """Names (as in model.named_parameters()) of the parameters the inner loop adapts."""
        return self._adapted

    def inner_lr(self, name: str) -> Union[float, Tensor]:
        """The inner-loop learning rate of parameter ``name``: a float or a tensor broadcastable to it."""
        return self.lr

    def support_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The inner-loop loss on the support set (cross-entropy)."""
        return F.cross_entropy(logits, labels)

    # Functional API ----------------------------------------------------------------------------
    def parameters_dict(self) -> Params:
        """The model's parameters as a name -> tensor dict (the starting point θ of every task)."""
        return dict(self.model.named_parameters())

    def _inner_start(self, training: bool) -> Tuple[List[str], Params, Dict[str, Union[float, Tensor]]]:
        """Adapted names, starting parameters and their inner rates; detached when not training
        (evaluation keeps no outer graph)."""
        names = self.adapted_names()
        params = self.parameters_dict()
        lrs = {n: self.inner_lr(n) for n in names}
        if not training:
            params = {n: p.detach() for n, p in params.items()}
            lrs = {n: lr.detach() if isinstance(lr, Tensor) else lr for n, lr in lrs.items()}
        return names, params, lrs

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: Optional[int] = None,
              training: bool = False) -> Params:
        """Fast parameters after ``steps`` inner steps (default train_steps if training else test_steps).

        support_x (S, C, H, W), support_y (S,). With training=True the result stays differentiable
        w.r.t. the learner's parameters (second order unless first_order); with training=False it is
        detached.
        """
        if steps is None:
            steps = self.train_steps if training else self.test_steps
        names, params, lrs = self._inner_start(training)
        if self.compiles(training):
            with self.autocast(support_x.device):
                return first_order_adapt(self.compiled_inner(), params, dict(self.model.named_buffers()), names, lrs,
                                      support_x, support_y, steps, training)
        with self.autocast(support_x.device):
            return inner_loop(self.model, params, dict(self.model.named_buffers()), support_x, support_y, names, lrs,
                              steps, create_graph=not self.first_order, keep_graph=training,
                              loss_fn=self.support_loss, checkpoint=self.checkpoint_inner)

    def predict(self, params: Params, x: Tensor) -> Tensor:
        """Logits (B, n_way) of x (B, C, H, W) under the parameters ``params`` (float32 under amp)."""
        buffers = dict(self.model.named_buffers())
        with self.autocast(x.device):
            if self.compiles(training=torch.is_grad_enabled()):
                logits = self.compiled_inner().forward(batched=False)(params, {}, buffers, x)
            else:
                logits = forward(self.model, params, buffers, x)
        return logits.float() if self.amp != "off" else logits

    # torch.compile ------------------------------------------------------------------------------
    def compiles(self, training: bool) -> bool:
        """Whether the compiled path runs: compile is on and no double backward is needed."""
        return self.compile and (self.first_order or not training)

    def compiled_inner(self) -> CompiledInner:
        """The learner's compiled inner step and forward (built on first use)."""
        if self._compiled is None:
            self._compiled = CompiledInner(self.model, self.support_loss, self.compile_mode)
        return self._compiled

    def eager_inner(self) -> CompiledInner:
        """The same functions as ``compiled_inner``, not compiled (first-order vectorised path)."""
        if self._eager is None:
            self._eager = CompiledInner(self.model, self.support_loss, compile=False)
        return self._eager

    def autocast(self, device: torch.device) -> ContextManager:
        """torch.autocast(bfloat16) on ``device`` when amp="bf16", else a no-op."""
        if self.amp == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # Task batching -----------------------------------------------------------------------------
    def uses_task_batching(self, device: torch.device) -> bool:
        """Whether meta_loss/evaluate on ``device`` take the vectorised path in the current mode."""
        mode = self.task_batching
        if mode == "off" or (mode == "auto" and (device.type != "cuda" or self.checkpoint_inner)):
            return False
        cls = type(self)
        overridden = [m for m in ("adapt", "predict", "task_logits") if getattr(cls, m) is not getattr(GradientLearner, m)]
        blocker = vmap_blocker(self.model)
        reason = None
        if overridden:
            reason = f"{cls.__name__} overrides {', '.join(overridden)}, which the vectorised path would bypass"
        elif blocker is not None:
            reason = (f"module {blocker!r} is a BatchNorm that updates running statistics in place (bn: running in "
                      "train mode), which vmap cannot batch; use bn: transductive to batch tasks")
        if reason is None:
            return True
        if mode == "vmap" and reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(f"learner {self.NAME!r}: task_batching='vmap' falls back to the sequential loop: {reason}",
                          RuntimeWarning, stacklevel=3)
        return False

    def batched_task_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, training: bool) -> Tensor:
        """Query logits (T, Q, n_way) of all tasks, their inner loops vectorised (see ``batched.py``).

        support_x (T, S, C, H, W), support_y (T, S), query_x (T, Q, C, H, W); training as in task_logits
        (False: test_steps steps, no outer graph; call it under torch.no_grad).
        """
        steps = self.train_steps if training else self.test_steps
        names, params, lrs = self._inner_start(training)
        buffers = dict(self.model.named_buffers())
        first_order = self.first_order or not training

        def run(sx: Tensor, sy: Tensor, qx: Tensor, chunk: Optional[int]) -> Tensor:
            with self.autocast(sx.device):
                if first_order and (self.compile or self.amp == "off"):
                    # no_grad inner steps, then θ - lr·G (compiled.py): no outer graph through the inner loop
                    inner = self.compiled_inner() if self.compile else self.eager_inner()
                    out = first_order_batched_logits(inner, params, buffers, names, lrs, sx, sy, qx, steps, training,
                                                  chunk=chunk)
                else:
                    out = batched_logits(self.model, params, buffers, names, lrs, sx, sy, qx, steps, first_order,
                                         loss_fn=self.support_loss, chunk=chunk)
            return out.float() if self.amp != "off" else out

        tasks = support_x.shape[0]
        chunk = self.task_chunk
        if chunk is None:
            key = (tuple(support_x.shape[1:]), tuple(query_x.shape[1:]), support_x.dtype, training, steps)
            chunk = auto_chunk(lambda: run(support_x[:1], support_y[:1], query_x[:1], 1), tasks, support_x.device,
                               self._chunk_cache, key)
        return run(support_x, support_y, query_x, chunk)

    def _checked_batched_logits(self, batch: EpisodeBatch, training: bool) -> Tensor:
        logits = self.batched_task_logits(batch.support_x, batch.support_y, batch.query_x, training)
        return check_query_logits(self.NAME, logits, batch, per_task=False)

    def meta_loss(self, batch: EpisodeBatch) -> Tuple[Tensor, Dict[str, float]]:
        """As MetaLearner.meta_loss; vectorised over tasks when ``uses_task_batching``."""
        if not self.uses_task_batching(batch.support_x.device):
            return super().meta_loss(batch)
        check_batch(batch)
        logits = self._checked_batched_logits(batch, training=True)  # (T, Q, N)
        per_task = F.cross_entropy(logits.transpose(1, 2), batch.query_y, reduction="none").mean(1)
        loss = per_task.mean()
        acc = (logits.detach().argmax(-1) == batch.query_y).float().mean(1).mean()
        loss_value, acc_value = torch.stack([loss.detach(), acc]).tolist()
        return loss, {"loss": loss_value, "acc": acc_value}

    def evaluate(self, batch: EpisodeBatch) -> Tensor:
        """As MetaLearner.evaluate (accuracies (T,)); vectorised over tasks when ``uses_task_batching``."""
        was_training = self.training
        self.eval()
        try:
            if not self.uses_task_batching(batch.support_x.device):
                return super().evaluate(batch)
            check_batch(batch)
            with torch.no_grad():
                logits = self._checked_batched_logits(batch, training=False)
            return (logits.argmax(-1) == batch.query_y).float().mean(1)
        finally:
            self.train(was_training)

    def task_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int,
                    training: bool) -> Tensor:
        return self.predict(self.adapt(support_x, support_y, training=training), query_x)
