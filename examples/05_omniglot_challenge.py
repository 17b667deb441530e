# %% [markdown]
# # The Omniglot challenge on a minimal background set, scored on the 20 official runs
#
# Omniglot (Lake et al. 2015) as users download it: `images_background_small1.zip`,
# `images_background_small2.zip`, `images_evaluation.zip` and `all_runs.zip` in one folder. metakd reads
# the zips directly. This tutorial trains ProtoNet on the minimal background set small1 (5 alphabets),
# checks it on the validation alphabets, then scores it once on the 20 official one-shot runs (20-way
# 1-shot within one evaluation alphabet each, 400 items) and scores a pre-trained backbone the same way.
#
# Point `METAKD_OMNIGLOT` at your folder (default `data/omniglot`). `METAKD_TUTORIAL_TINY=1` instead
# writes a tiny synthetic folder in the official layout and shrinks every budget to seconds (the test
# suite does that, so the tutorial never rots).

# %%
import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import metakd
from metakd.config import load_config
from metakd.data.preprocess import episode_from_files, preprocess_for
from metakd.engine.evaluation.fixed import evaluate_fixed_checkpoint
from metakd.engine.training.job_config import load_pretrain_config
from metakd.engine.training.meta import Trainer
from metakd.engine.training.pretrain import run_pretrain

TINY = os.environ.get("METAKD_TUTORIAL_TINY") == "1"
torch.set_num_threads(1)
out = Path(os.environ.get("METAKD_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="metakd-tutorial-"))


def synthetic_omniglot(root: Path, way: int = 3) -> Path:
    """A tiny folder in the official layout (random black-on-white strokes): for the smoke test only."""
    rng = np.random.default_rng(0)

    def png() -> bytes:
        img = np.ones((105, 105), bool)
        for _ in range(3):
            r, c = rng.integers(0, 85, 2)
            img[r:r + 15, c:c + 15] = False
        buf = io.BytesIO()
        Image.fromarray(img).convert("1").save(buf, format="PNG")
        return buf.getvalue()

    sets = {"images_background_small1": ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"],
            "images_background_small2": ["Japanese_(katakana)", "Sanskrit", "Tagalog"],
            "images_evaluation": ["Angelic", "Kannada"]}
    root.mkdir(parents=True, exist_ok=True)
    for name, alphabets in sets.items():
        with zipfile.ZipFile(root / f"{name}.zip", "w") as zf:
            for a in alphabets:
                for c in range(1, 3):
                    for d in range(1, 4):
                        zf.writestr(f"{name}/{a}/character{c:02d}/{c:04d}_{d:02d}.png", png())
    with zipfile.ZipFile(root / "all_runs.zip", "w") as zf:
        for r in (1, 2):
            labels = []
            for k in range(1, way + 1):
                zf.writestr(f"run{r:02d}/training/class{k:02d}.png", png())
                zf.writestr(f"run{r:02d}/test/item{k:02d}.png", png())
                labels.append(f"run{r:02d}/test/item{k:02d}.png run{r:02d}/training/class{k:02d}.png")
            zf.writestr(f"run{r:02d}/class_labels.txt", "\n".join(labels) + "\n")
    return root


root = synthetic_omniglot(out / "omniglot") if TINY else Path(os.environ.get("METAKD_OMNIGLOT", "data/omniglot"))
WAY = 3 if TINY else 20  # the official runs are 20-way
small = ["model.options.hidden=8", "episodes.q_query=2", "episodes.test_q_query=2"] if TINY else []

# %% [markdown]
# ## 1. Meta-train ProtoNet on small1 (validation: the small2 alphabets not in small1)
# The same as `metakd train protonet_omniglot_small1_20w1s data.root=...` on the command line.

# %%
iterations = 2 if TINY else 1500
cfg = load_config("protonet_omniglot_small1_20w1s", [
    f"data.root={root}", "device=cpu", f"episodes.n_way={WAY}", f"train.iterations={iterations}",
    f"train.val_every={iterations}", f"train.checkpoint_every={iterations}", f"train.val_episodes={3 if TINY else 100}",
    "tensorboard=false", *small])
summary = Trainer(cfg, output_dir=out / "protonet", progress=False).fit()
print("best validation:", summary["best_val"])

# %% [markdown]
# ## 2. Score it once on the official runs
# `metakd eval RUN --episodes omniglot-runs` does the same and prints the per-run errors.

# %%
res = evaluate_fixed_checkpoint(out / "protonet", "omniglot-runs", device="cpu", root=str(root))
lo, hi = res["error_wilson95"]
print(f"ProtoNet on the runs: error {100 * res['error_rate']:.2f}% ({res['errors']}/{res['items']} items, "
      f"Wilson 95% {100 * lo:.1f}-{100 * hi:.1f}) -> {res['output']}")

# %% [markdown]
# ## 3. Pre-training, then nearest centroid on its features (ProtoNet without meta-training)

# %%
pcfg = load_pretrain_config("pretrain_conv4_omniglot_small1", [
    f"data.root={root}", "device=cpu", f"episodes.n_way={WAY}", f"train.epochs={1 if TINY else 30}",
    f"train.val_episodes={3 if TINY else 100}", *small])
run_pretrain(pcfg, out / "pretrain", progress=False)
nc = evaluate_fixed_checkpoint(out / "pretrain", "omniglot-runs", device="cpu", root=str(root), learner="protonet",
                               overrides=[f"episodes.n_way={WAY}"])
print(f"pre-trained + nearest centroid on the runs: error {100 * nc['error_rate']:.2f}%")
print("published with the FULL background set (Lake et al. 2015): people 4.5%, BPL 3.3%, simple ConvNet 13.5%")

# %% [markdown]
# ## 4. Your own images: checkpoint -> learner, files -> episode (the training preprocessing) -> predict

# %%
learner, ckpt = metakd.load_learner(out / "protonet")
pre = preprocess_for(ckpt["config"]["data"]["dataset"], ckpt["data"]["image_size"], ckpt["data"]["in_channels"],
                     ckpt.get("normalize"))
with zipfile.ZipFile(root / "all_runs.zip") as zf:  # any image files do; here run 1's, as bytes
    support = [zf.read(f"run01/training/class{k:02d}.png") for k in range(1, WAY + 1)]
    query = [zf.read(f"run01/test/item{k:02d}.png") for k in range(1, 3)]
batch, classes = episode_from_files(support, [f"class{k}" for k in range(1, WAY + 1)], query, pre)
with torch.no_grad():
    logits = learner.predict(learner.adapt(batch.support_x[0], batch.support_y[0]), batch.query_x[0])
print("predicted classes of two run-1 items:", [classes[i] for i in logits.argmax(-1).tolist()])
