"""The tutorials in examples/ run end to end at a tiny budget, so they never rot."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXPECT = {
    "01_train_and_evaluate.py": ["ImageSplit(glyphs/train", "test accuracy", "best validation"],
    "02_add_a_learner.py": ["learned per-step rates", "test accuracy"],
    "03_robustness_and_compare.py": ["| demo_msd | standard |", "| demo_msd | strong / support |"],
    "04_distill_teacher_student.py": ["teacher", "student"],
    "05_omniglot_challenge.py": ["ProtoNet on the runs: error", "pre-trained + nearest centroid", "predicted classes"],
}


def test_every_tutorial_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("[0-9]*.py")) == sorted(EXPECT)


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_tutorial_runs(name, tmp_path):
    env = dict(os.environ, METAKD_TUTORIAL_TINY="1", METAKD_TUTORIAL_OUT=str(tmp_path), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, env=env,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for text in EXPECT[name]:
        assert text in proc.stdout, (text, proc.stdout[-2000:])
