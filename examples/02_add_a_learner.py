# %% [markdown]
# # Add a meta-learner with a new update rule
#
# A gradient learner fills in hooks of metakd's one inner-loop engine; every executor (the
# sequential loop, tasks vectorised with vmap, compiled first order) then runs it. Here: MAML with
# one learned inner learning rate per step, shared by all parameters — then trained through the
# engine by its registered name, like any built-in learner.

# %%
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from metakd.learners import GradientLearner, PerStep
from metakd.registry import LEARNERS

TINY = os.environ.get("METAKD_TUTORIAL_TINY") == "1"
ITERATIONS, EPISODES = (3, 10) if TINY else (300, 600)
torch.set_num_threads(1)
out = Path(os.environ.get("METAKD_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="metakd-tutorial-"))


@LEARNERS.register("tutorial_step_lr")
class StepLRMAML(GradientLearner):
    """MAML whose inner step s uses its own learned rate step_lrs[s]."""
    NAME = "tutorial_step_lr"

    def __init__(self, model: nn.Module, **options):
        super().__init__(model, **options)
        self.step_lrs = nn.Parameter(torch.full((max(1, self.train_steps),), self.lr))

    def inner_lr(self, name: str) -> PerStep:
        return PerStep(self.step_lrs)


# %% [markdown]
# Registered by name, it is selected in a config like any built-in learner:

# %%
from metakd.config import load_config  # noqa: E402
from metakd.engine.evaluation.checkpoint_eval import evaluate_checkpoint  # noqa: E402
from metakd.engine.training.meta import Trainer  # noqa: E402

cfg = load_config("demo_maml", ["learner.name=tutorial_step_lr", "learner.options.train_steps=2",
                                f"train.iterations={ITERATIONS}", f"train.val_every={ITERATIONS}",
                                "train.val_episodes=20", f"output_dir={out / 'step_lr'}"])
trainer = Trainer(cfg, progress=False)
trainer.fit()
print("learned per-step rates:", [round(v, 4) for v in trainer.learner.step_lrs.tolist()])
res = evaluate_checkpoint(out / "step_lr", episodes=EPISODES, progress=False)
print(f"test accuracy {100 * res['accuracy']:.2f} ± {100 * res['ci95']:.2f} %")
