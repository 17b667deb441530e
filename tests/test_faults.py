"""Fault injection: SIGINT / SIGTERM / SIGKILL at chosen and at random moments of short runs (sampling, the
step, validation, a checkpoint write), each followed by --resume and a bit-exact comparison with an
uninterrupted run; torn metrics.jsonl; resume config checks; --overwrite; unusable output folders.

Chosen moments use the test hook METAKD_FAULT_AT="<phase>:<step>:<signal>" (metakd.engine.runs.folder.fault_point).
"""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metakd.cli import main
from metakd.config import load_config
from metakd.engine.training.job_config import load_distill_config
from metakd.engine.runs import folder as run_dir
from metakd.engine.runs.checkpoint import load_checkpoint
from metakd.engine.training.distill import run_distill
from metakd.engine.runs.metrics import JsonlLogger
from metakd.engine.training.meta import Trainer
from metakd.errors import MetakdError

ROOT = Path(__file__).resolve().parents[1]
# 6 steps, validation and last.pt every 2 steps: a few seconds on one CPU thread
TINY = ["device=cpu", "threads=1", "model.options.hidden=8", "learner.options.train_steps=1",
        "learner.options.test_steps=1", "train.meta_batch=2", "train.iterations=6", "train.val_every=2",
        "train.val_episodes=4", "train.checkpoint_every=2", "train.log_every=1", "episodes.q_query=2",
        "episodes.test_q_query=2"]


def tiny_cfg(out, *extra):
    return load_config("maml_glyphs_5w1s", [*TINY, f"output_dir={out}", *extra])


def params(state):
    return {k: v.detach().clone() for k, v in state.items()}


def records(out):
    """(kind, step, loss or acc) of each metrics record: everything but the wall-clock rate."""
    return [(r["kind"], r["step"], r.get("loss"), r["acc"]) for r in JsonlLogger(Path(out) / "metrics.jsonl").read()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    trainer = Trainer(tiny_cfg(out), progress=False)
    trainer.fit()
    return {"out": out, "params": params(trainer.learner.state_dict()), "records": records(out),
            "best": params(load_checkpoint(out / "best.pt")["learner"])}


def assert_same_as_reference(out, reference):
    resumed = Trainer(tiny_cfg(out), progress=False)
    resumed.fit(resume=(Path(out) / "last.pt").exists())  # stopped before the first step: nothing to resume
    got = params(resumed.learner.state_dict())
    assert got.keys() == reference["params"].keys()
    differ = [k for k in got if not torch.equal(got[k], reference["params"][k])]
    assert not differ, f"{len(differ)} of {len(got)} tensors differ: {differ[:3]}"
    assert records(out) == reference["records"]
    best = params(load_checkpoint(Path(out) / "best.pt")["learner"])
    assert all(torch.equal(best[k], reference["best"][k]) for k in best)
    assert not [p.name for p in Path(out).iterdir() if p.name.endswith(".tmp")]


# -- chosen moments, in this process

@pytest.mark.parametrize("spec", ["sample:3:SIGINT", "step:2:SIGTERM", "val:4:SIGINT", "save:2:SIGINT",
                                  "save:6:SIGTERM"])
def test_signal_at_a_phase_then_resume_is_exact(tmp_path, reference, monkeypatch, spec):
    monkeypatch.setenv(run_dir.FAULT_ENV, spec)
    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    verb = "terminated \\(SIGTERM\\)" if spec.endswith("SIGTERM") else "interrupted"
    with pytest.raises(MetakdError, match=f"{verb} at step .*--resume"):
        Trainer(tiny_cfg(tmp_path), progress=False).fit()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == previous  # handlers restored
    phase, step, _ = spec.split(":")
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] == int(step)  # the boundary after the step the signal came in
    assert ckpt["pending_val"] == (phase in ("step", "val"))  # an interrupted validation reruns
    assert_same_as_reference(tmp_path, reference)


def test_second_ctrl_c_while_saving_only_prints(tmp_path, reference, monkeypatch, capsys):
    import metakd.engine.training.meta as train_mod

    def twice(phase, step):
        if (phase, step) == ("save", 4):
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train_mod, "fault_point", twice)
    with pytest.raises(MetakdError, match="interrupted at step 4"):
        Trainer(tiny_cfg(tmp_path), progress=False).fit()
    assert "still saving" in capsys.readouterr().err
    monkeypatch.undo()
    assert_same_as_reference(tmp_path, reference)


def test_random_moments_in_process(tmp_path, reference):
    """SIGINT from a timer thread at random moments (the main thread handles it wherever it is)."""
    import threading

    rng = random.Random(os.environ.get("METAKD_FAULT_SEED", time.time_ns()))
    swallowed = []
    old = signal.signal(signal.SIGINT, lambda *a: swallowed.append(1))  # a late timer must not hit pytest
    try:
        for trial in range(5):
            out = tmp_path / str(trial)
            trainer = Trainer(tiny_cfg(out), progress=False)
            timer = threading.Timer(rng.uniform(0.0, 0.35), os.kill, (os.getpid(), signal.SIGINT))
            timer.start()
            try:
                trainer.fit()
                interrupted = False
            except MetakdError as exc:
                assert "interrupted" in str(exc)
                interrupted = True
            timer.join()
            if interrupted:
                assert_same_as_reference(out, reference)
            else:  # finished first
                got = params(trainer.learner.state_dict())
                assert all(torch.equal(got[k], reference["params"][k]) for k in got)
    finally:
        signal.signal(signal.SIGINT, old)


# -- real processes: the CLI under SIGTERM, SIGKILL and random SIGINT

def cli(out, *extra, env=None):
    cmd = [sys.executable, "-m", "metakd", "train", "maml_glyphs_5w1s", *TINY, "--output-dir", str(out), "--no-progress", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_in_a_real_process(tmp_path, reference):
    proc = cli(tmp_path, env={run_dir.FAULT_ENV: "step:3:SIGTERM"})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert err.strip().splitlines()[-1].startswith("metakd train: error: terminated (SIGTERM) at step 3")
    assert "Traceback" not in err
    assert_same_as_reference(tmp_path, reference)


def test_sigkill_mid_checkpoint_write_then_torn_log(tmp_path, reference):
    proc = cli(tmp_path, env={run_dir.FAULT_ENV: "save:4:SIGKILL"})
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the dead writer's temporary
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2
    with open(tmp_path / "metrics.jsonl", "a") as f:  # and a record torn by a crash mid-write
        f.write('{"kind": "train", "step": 5, "lo')
    assert_same_as_reference(tmp_path, reference)  # also: the temporary is removed at the start


def test_sigint_at_a_random_moment_in_a_real_process(tmp_path, reference):
    rng = random.Random(os.environ.get("METAKD_FAULT_SEED", time.time_ns()))
    proc = cli(tmp_path)
    deadline = time.time() + 120
    while not (tmp_path / "metrics.jsonl").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.3))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    if "done: 6 iterations" in out:
        return  # finished first (the signal may then hit the interpreter's exit): nothing to resume
    assert "Traceback" not in err
    # 2: stopped at a step boundary; 130: the run had ended, the signal came while it reported
    assert proc.returncode in (2, 130) and "interrupted" in err, err
    assert_same_as_reference(tmp_path, reference)


def test_ctrl_c_while_loading_data_leaves_nothing(tmp_path, monkeypatch, capsys):
    import metakd.engine.training.meta as train_mod

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "split_for", interrupted)
    code = main(["train", "maml_glyphs_5w1s", *TINY, "--output-dir", str(tmp_path / "run"), "--no-progress"])
    assert code != 0 and "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# -- distillation: SIGTERM at a step and SIGINT in the end-of-epoch evaluation

DISTILL = ["data.max_classes=4", "data.image_size=16", "teacher.arch=resnet20", "student.arch=resnet20",
           "train.batch_size=16", "device=cpu", "train.epochs=2", "teacher.epochs=1", "train.lr_milestones=[]",
           "train.log_every=1", "train.eval_batch_size=100"]


def test_distill_signals_then_resume_are_exact(tmp_path, monkeypatch):
    cfg = load_distill_config("distill_glyphs_kd", DISTILL)
    full = run_distill(cfg, tmp_path / "full", progress=False)
    want = torch.load(tmp_path / "full" / "student" / "student.pt", weights_only=True)["model"]
    out = tmp_path / "cut"
    monkeypatch.setenv(run_dir.FAULT_ENV, "step:3:SIGTERM")  # in the teacher phase (4 steps an epoch)
    with pytest.raises(MetakdError, match="terminated \\(SIGTERM\\) in teacher epoch 1"):
        run_distill(cfg, out, progress=False)
    monkeypatch.setenv(run_dir.FAULT_ENV, "val:2:SIGINT")  # the student's epoch-2 test evaluation
    with pytest.raises(MetakdError, match="interrupted after student epoch 2 \\(its evaluation reruns"):
        run_distill(cfg, out, resume=True, progress=False)
    monkeypatch.delenv(run_dir.FAULT_ENV, raising=False)
    res = run_distill(cfg, out, resume=True, progress=False)
    got = torch.load(out / "student" / "student.pt", weights_only=True)["model"]
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert res["student"]["test_acc"] == full["student"]["test_acc"]
    strip = lambda recs: [{k: v for k, v in r.items() if k not in ("seconds",)} for r in recs]  # noqa: E731
    assert strip(JsonlLogger(out / "student" / "metrics.jsonl").read()) == \
        strip(JsonlLogger(tmp_path / "full" / "student" / "metrics.jsonl").read())


# -- resume config checks

def test_resume_refuses_changed_training_keys_and_names_them(tmp_path):
    Trainer(tiny_cfg(tmp_path), progress=False).fit(max_steps=2)
    with pytest.raises(MetakdError, match=r"train.lr: checkpoint 0.001, now 0.01"):
        Trainer(tiny_cfg(tmp_path, "train.lr=0.01"), progress=False).fit(resume=True)
    with pytest.raises(MetakdError, match=r"train.optimizer: checkpoint 'adam', now 'sgd'"):
        Trainer(tiny_cfg(tmp_path, "train.optimizer=sgd"), progress=False).fit(resume=True)
    longer = Trainer(tiny_cfg(tmp_path, "train.iterations=7", "train.log_every=3"), progress=False)
    assert longer.fit(resume=True)["step"] == 7  # extending the run and logging keys may change


def test_distill_resume_names_the_changed_key(tmp_path):
    cfg = load_distill_config("distill_glyphs_kd", DISTILL)
    run_distill(cfg, tmp_path, progress=False, max_steps=2)
    with pytest.raises(MetakdError, match=r"train.momentum: checkpoint 0.9, now 0.5"):
        run_distill(load_distill_config("distill_glyphs_kd", [*DISTILL, "train.momentum=0.5"]), tmp_path,
                    resume=True, progress=False, max_steps=1)


# -- --overwrite

def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    data = tmp_path / "dataset"
    (data / "train").mkdir(parents=True)
    (data / "train" / "img0.png").write_bytes(b"x")
    (data / "metrics.jsonl").write_text("{}\n")  # a marker file alone is not enough
    assert main(["train", "maml_glyphs_5w1s", *TINY, "--output-dir", str(data), "--overwrite", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not a metakd run folder" in err and str(data) in err
    assert (data / "train" / "img0.png").exists() and (data / "metrics.jsonl").exists()


def test_overwrite_deletes_only_metakd_files(tmp_path, capsys):
    out = tmp_path / "run"
    Trainer(tiny_cfg(out, "train.iterations=2"), progress=False).fit()
    (out / "notes.txt").write_text("mine")
    assert main(["eval", str(out), "--episodes", "4", "--no-progress"]) == 0  # metakd's eval_*.json: in the manifest
    assert (out / "eval_test_4ep_seed0.json").is_file()
    (out / "eval_mine.json").write_text("{}")  # a user's file with a metakd-like name: not in the manifest
    assert main(["train", "maml_glyphs_5w1s", *TINY, "train.iterations=2", "--output-dir", str(out), "--overwrite",
                 "--no-progress"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and not (out / "eval_test_4ep_seed0.json").exists()
    assert (out / "eval_mine.json").read_text() == "{}"
    assert "kept 2 entries" in capsys.readouterr().err


# -- unusable output folders

def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", ["train", "distill"])
def test_output_folder_under_a_file_is_a_file_or_too_long(tmp_path, capsys, command):
    args = ["train", "maml_glyphs_5w1s", *TINY] if command == "train" else ["distill", "distill_glyphs_kd", *DISTILL]
    (tmp_path / "file").write_text("x")
    for out, reason in ((tmp_path / "file" / "run", "is a file"), (tmp_path / "file", "is a file"),
                        (tmp_path / ("x" * 300) / "run", "longer than the file system allows")):
        assert main([*args, "--output-dir", str(out), "--no-progress"]) == 2
        err = one_line_error(capsys)
        assert str(out) in err and reason in err


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs (root only); unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = []

    def mount(size, *options):
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    yield mount
    for m in mounted:
        subprocess.run(["umount", str(m)], check=False)


@pytest.mark.parametrize("command", ["train", "distill"])
def test_read_only_and_full_output_folders(tmpfs, capsys, monkeypatch, command):
    args = ["train", "maml_glyphs_5w1s", *TINY] if command == "train" else ["distill", "distill_glyphs_kd", *DISTILL]
    mnt = tmpfs("256k")
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    assert main([*args, "--output-dir", str(mnt / "run"), "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert str(mnt / "run") in err and "read-only" in err
    subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)  # fill the disk
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    assert main([*args, "--output-dir", str(mnt / "run"), "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert str(mnt / "run") in err and "disk is full" in err


def test_disk_full_mid_run_is_one_line_and_leaves_no_temporary(tmpfs, capsys, monkeypatch):
    mnt = tmpfs("48k")
    monkeypatch.setattr(run_dir, "MIN_FREE_BYTES", 0)  # get past the check before the work
    assert main(["train", "maml_glyphs_5w1s", *TINY, "--output-dir", str(mnt / "run"), "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert str(mnt / "run") in err and "disk is full" in err
    assert not [p for p in (mnt / "run").iterdir() if p.name.endswith(".tmp")]
