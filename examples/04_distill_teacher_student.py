# %% [markdown]
# # Distil a teacher into a student (classification)
#
# `metakd distill` trains a teacher (or loads `teacher.checkpoint`), then a student with the
# teacher's soft targets: `distill.method` is `kd` (Hinton), `kd_rank` (+ Kendall's τ rank loss,
# RKKD) or `mkd` (meta-learned temperatures). Here on the built-in glyphs, small enough for a CPU;
# the same config family runs CIFAR-100 with `data.root=/data/cifar`.

# %%
import os
import tempfile
from pathlib import Path

import torch

from metakd.engine.training.distill import run_distill
from metakd.engine.training.job_config import load_distill_config

TINY = os.environ.get("METAKD_TUTORIAL_TINY") == "1"
torch.set_num_threads(1)
out = Path(os.environ.get("METAKD_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="metakd-tutorial-"))
size = (["data.max_classes=8", "data.image_size=16", "teacher.arch=resnet20", "train.batch_size=32",
         "train.epochs=1", "teacher.epochs=1", "train.lr_milestones=[]", "train.eval_batch_size=100"]
        if TINY else [])

# %% [markdown]
# The teacher is trained once, in the first run, and reused by the others through
# `teacher.checkpoint`: every method distils the same teacher.

# %%
results = {}
for method in ("kd", "kd_rank", "mkd"):
    extra = [] if method == "kd" else [f"teacher.checkpoint={out / 'kd' / 'teacher' / 'teacher.pt'}"]
    cfg = load_distill_config("distill_glyphs_kd", [f"distill.method={method}", *size, *extra])
    results[method] = run_distill(cfg, out / method, progress=False)

teacher = results["kd"]["teacher"]
print(f"teacher {teacher['arch']}: test top-1 {100 * teacher['test_acc']:.2f}%")
for method, res in results.items():
    print(f"student {res['student']['arch']} with {method}: test top-1 {100 * res['student']['test_acc']:.2f}%")

# %% [markdown]
# One run and one seed say little: `benchmarks/distill_proxy.py` compares CE only, KD, KD + rank,
# MKD and MKD + rank over seeds with Student-t intervals and paired differences.
