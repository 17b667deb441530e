# %% [markdown]
# # Train and evaluate a meta-learner on the built-in glyphs
#
# The glyph dataset ships with metakd (no download): one class per Unicode character drawn by
# several fonts. This tutorial meta-trains MAML on it twice — once through the Python API, once
# through the engine that `metakd train` runs — and evaluates on the fixed test episodes.
#
# Run it as a script (`python examples/01_train_and_evaluate.py`) or open it as a notebook
# (the `# %%` cells are Jupyter/VS Code cells). `METAKD_TUTORIAL_TINY=1` shrinks every budget
# to seconds (the test suite does that so the tutorials never rot).

# %%
import os
import tempfile
from pathlib import Path

import torch

from metakd.data import EpisodeSampler, load_split
from metakd.learners import build_learner
from metakd.models import build_backbone

TINY = os.environ.get("METAKD_TUTORIAL_TINY") == "1"
ITERATIONS, EPISODES = (3, 10) if TINY else (300, 600)
torch.set_num_threads(1)  # these models are tiny: one CPU thread is the fastest
torch.manual_seed(0)
out = Path(os.environ.get("METAKD_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="metakd-tutorial-"))

# %% [markdown]
# ## 1. The Python API: a split, a sampler, a learner, an optimiser

# %%
train = load_split("glyphs", None, "train", image_size=28, channels=1)
test = load_split("glyphs", None, "test", image_size=28, channels=1)
print(train)  # one line: classes, images, image shape, storage

sampler = EpisodeSampler(train, n_way=5, k_shot=1, q_query=5, seed=0)
backbone = build_backbone("conv4", n_way=5, hidden=32, in_channels=1, image_size=28)
learner = build_learner("maml", backbone, inner_lr=0.4, train_steps=1, test_steps=3)
opt = torch.optim.Adam(learner.parameters(), lr=3e-3)

for step in range(1, ITERATIONS + 1):
    loss, metrics = learner.meta_loss(sampler.sample(4))   # 4 tasks per meta-batch
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % max(1, ITERATIONS // 5) == 0:
        print(f"step {step}: loss {metrics['loss']:.3f}, query accuracy {100 * metrics['acc']:.1f}%")

# %% [markdown]
# Evaluation uses a fixed list of test episodes: it depends only on the seed and the split, so
# two methods (or two machines) are compared on identical tasks.

# %%
from metakd.engine.evaluation.episodes import evaluate_episodes  # noqa: E402

test_sampler = EpisodeSampler(test, n_way=5, k_shot=1, q_query=15)
episodes = test_sampler.fixed_episodes(EPISODES, seed=0)
res = evaluate_episodes(learner, test_sampler, episodes, batch_size=8, progress=False)
print(f"test accuracy {100 * res['acc']:.2f} ± {100 * res['ci95']:.2f} % over {res['episodes']} episodes")

# %% [markdown]
# ## 2. The engine: the same run from a config, with checkpoints, validation and exact resume
#
# `metakd train demo_maml` does exactly this; a config is YAML plus `key=value` overrides.

# %%
from metakd.config import load_config  # noqa: E402
from metakd.engine.evaluation.checkpoint_eval import evaluate_checkpoint  # noqa: E402
from metakd.engine.training.meta import Trainer  # noqa: E402

cfg = load_config("demo_maml", [f"train.iterations={ITERATIONS}", f"train.val_every={ITERATIONS}",
                                "train.val_episodes=20", f"output_dir={out / 'maml'}"])
summary = Trainer(cfg, progress=False).fit()
print("best validation:", summary["best_val"])
result = evaluate_checkpoint(out / "maml", episodes=EPISODES, progress=False)
print(f"{result['run']}: {100 * result['accuracy']:.2f} ± {100 * result['ci95']:.2f} % -> {result['output']}")
