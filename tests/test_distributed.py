"""Distributed meta-training on gloo/CPU: 2 processes on the loopback interface vs 1 process.

One 2-process job (spawned once per module) runs every distributed scenario and writes what each rank
saw to JSON / .pt files; the tests below compare those with single-process runs made here.
"""
import json
import os
import socket
import traceback

import pytest
import torch
import torch.multiprocessing as mp

from metakd.config import load_config
from metakd.engine.assembly import make_sampler, split_for
from metakd.engine.runs.checkpoint import load_checkpoint
from metakd.engine.runs.distributed import DistContext, init_distributed
from metakd.engine.evaluation.sharded import evaluate_sharded
from metakd.engine.evaluation.episodes import evaluate_episodes
from metakd import load_learner
from metakd.engine.evaluation.checkpoint_eval import evaluate_checkpoint
from metakd.engine.training.meta import Trainer
from metakd.errors import ConfigError, MetakdError

WORLD = 2
EVAL_EPISODES = 7  # not a multiple of the world size: ranks get 3 and 4 episodes


def tiny_cfg(out, *extra):
    """Seconds-long glyph MAML: Conv4 with 8 channels, global meta-batch 4, validation at steps 3 and 6.

    The 1- and 2-process meta-gradients differ only by the order of a float sum (one rank: the 4 task
    gradients accumulated in turn; two ranks: (t0 + t1) + (t2 + t3)), about 1e-8. The optimiser must not
    amplify that: SGD, not Adam (a conv bias before BatchNorm has a zero gradient up to rounding, which
    Adam scales to lr-sized steps), and modest learning rates (MAML's inner lr 0.4 turns 1e-7 into 1e-2
    within 6 steps at ReLU / max-pool kinks; 0.1 keeps the runs within 1e-6).
    """
    return load_config("maml_glyphs_5w1s", [
        "device=cpu", "threads=1", f"output_dir={out}", "train.optimizer=sgd", "train.lr=0.02",
        "learner.options.inner_lr=0.1", "model.options.hidden=8", "learner.options.train_steps=1",
        "learner.options.test_steps=2", "train.meta_batch=4", "train.iterations=6", "train.val_every=3",
        "train.val_episodes=6", "train.checkpoint_every=3", "train.log_every=2", "episodes.q_query=3",
        "episodes.test_q_query=3", *extra])


def params(learner):
    return {k: v.detach().cpu().clone() for k, v in learner.state_dict().items()}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup_rank(rank: int, port: int) -> None:
    """What torchrun exports, on the loopback interface only."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo", METAKD_DIST_TIMEOUT="60")


def _scenarios(rank: int, port: int, work: str) -> None:
    """Every 2-process scenario, in one process group (starting processes is the slow part here)."""
    _setup_rank(rank, port)
    out = {}
    # (a) a full run
    full = Trainer(tiny_cfg(f"{work}/full"), progress=False)
    assert full.dist.world_size == WORLD and full.dist.rank == rank and full.dist.backend == "gloo"
    out["summary"] = full.fit()
    torch.save(params(full.learner), f"{work}/full_rank{rank}.pt")
    # (c) interrupted after 4 steps, resumed by new trainers
    Trainer(tiny_cfg(f"{work}/resumed"), progress=False).fit(max_steps=4)
    resumed = Trainer(tiny_cfg(f"{work}/resumed"), progress=False)
    resumed.fit(resume=True)
    out["resumed_step"] = resumed.step
    torch.save(params(resumed.learner), f"{work}/resumed_rank{rank}.pt")
    # (b) sharded evaluation of the full run's checkpoint, directly and through `metakd eval`
    learner, ckpt = load_learner(f"{work}/full/last.pt", device="cpu")
    cfg = ckpt["config"]
    sampler = make_sampler(cfg, split_for(cfg, "val"), q_query=3, device=torch.device("cpu"), normalize=ckpt["normalize"])
    ctx = init_distributed(torch.device("cpu"))
    out["sharded"] = evaluate_sharded(ctx, learner, sampler, sampler.fixed_episodes(EVAL_EPISODES, 5),
                                      batch_size=2, progress=False)
    out["eval_checkpoint"] = evaluate_checkpoint(f"{work}/full/last.pt", episodes=EVAL_EPISODES, split="val",
                                                 device="cpu", batch_size=2, progress=False,
                                                 out=f"{work}/eval_sharded.json")
    # (d) meta-batch not divisible by the world size; (e) ranks launched with different configs
    for key, extra in (("indivisible", ["train.meta_batch=3"]), ("mismatch", [f"train.lr={0.001 * (rank + 1)}"])):
        try:
            Trainer(tiny_cfg(f"{work}/{key}", *extra), progress=False)
            out[key] = None
        except ConfigError as exc:
            out[key] = str(exc)
    # the group is still usable after those errors (every rank raised at the same point)
    out["after_errors"] = ctx.all_gather_object(rank)
    with open(f"{work}/rank{rank}.json", "w") as f:
        json.dump(out, f, default=str)


def _rank_dies(rank: int, port: int, work: str) -> None:
    """Rank 1 exits abruptly mid-job; rank 0 must report it, not hang."""
    _setup_rank(rank, port)
    ctx = init_distributed(torch.device("cpu"))
    ctx.barrier()
    if rank == 1:
        os._exit(3)
    try:
        ctx.average_metrics({"loss": 1.0})
        ctx.barrier()
        message = "no error"
    except MetakdError as exc:
        message = str(exc)
    with open(f"{work}/rank{rank}_death.json", "w") as f:
        json.dump({"message": message}, f)
    os._exit(0)  # skip the atexit destroy_process_group on a broken group


def _entry(target, rank: int, port: int, work: str) -> None:
    try:
        target(rank, port, work)
    except BaseException:
        with open(f"{work}/rank{rank}_error.txt", "w") as f:
            f.write(traceback.format_exc())
        raise


def launch(target, work, timeout=240):
    """Start WORLD spawned processes running ``target(rank, port, work)``; wait; return their exit codes."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_entry, args=(target, r, port, str(work))) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return [p.exitcode for p in procs]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    work = tmp_path_factory.mktemp("dist")
    single = Trainer(tiny_cfg(work / "single"), progress=False)  # also builds the glyph cache the ranks reuse
    single.fit()
    codes = launch(_scenarios, work)
    errors = "\n".join(p.read_text() for p in sorted(work.glob("rank*_error.txt")))
    assert codes == [0] * WORLD, f"exit codes {codes}\n{errors}"
    ranks = [json.loads((work / f"rank{r}.json").read_text()) for r in range(WORLD)]
    return {"work": work, "single": single, "ranks": ranks}


def _assert_close(a, b, **tol):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=lambda m: f"{k}: {m}", **tol)


def test_two_processes_match_one_process(job):
    work = job["work"]
    single = params(job["single"].learner)
    rank0 = torch.load(work / "full_rank0.pt")
    rank1 = torch.load(work / "full_rank1.pt")
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), f"ranks diverged at {k}"
    _assert_close(rank0, single, rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(rank0[k], params(Trainer(tiny_cfg(work / "fresh"), progress=False).learner)[k])
               for k in rank0), "training did not move the parameters"
    # rank 0 wrote the run; the checkpoint and the logged losses match the single-process run
    ckpt = load_checkpoint(work / "full" / "last.pt")
    assert ckpt["step"] == 6
    _assert_close({k: v for k, v in ckpt["learner"].items()}, single, rtol=1e-4, atol=1e-5)
    dist_log = [json.loads(line) for line in (work / "full" / "metrics.jsonl").read_text().splitlines()]
    one_log = job["single"].logger.read()
    assert [r["step"] for r in dist_log] == [r["step"] for r in one_log]
    train_losses = [[r["loss"] for r in log if r["kind"] == "train"] for log in (dist_log, one_log)]
    assert train_losses[0] == pytest.approx(train_losses[1], rel=1e-4)
    assert [r["acc"] for r in dist_log if r["kind"] == "val"] == pytest.approx(  # at most one query of 90 flips
        [r["acc"] for r in one_log if r["kind"] == "val"], abs=0.012)
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt", "curves.png", "summary.json"} <= {
        p.name for p in (work / "full").iterdir()}
    assert job["ranks"][0]["summary"]["world_size"] == WORLD


def test_two_process_resume_ends_where_uninterrupted_run_does(job):
    work = job["work"]
    assert [r["resumed_step"] for r in job["ranks"]] == [6, 6]
    full = torch.load(work / "full_rank0.pt")
    for r in range(WORLD):
        resumed = torch.load(work / f"resumed_rank{r}.pt")
        for k in full:
            assert torch.equal(full[k], resumed[k]), f"rank {r}: {k} differs after resume"


def test_sharded_evaluation_equals_unsharded(job):
    work = job["work"]
    learner, ckpt = load_learner(work / "full" / "last.pt", device="cpu")
    cfg = ckpt["config"]
    sampler = make_sampler(cfg, split_for(cfg, "val"), q_query=3, device=torch.device("cpu"), normalize=ckpt["normalize"])
    whole = evaluate_episodes(learner, sampler, sampler.fixed_episodes(EVAL_EPISODES, 5), batch_size=2, progress=False)
    for rank in job["ranks"]:
        sharded = rank["sharded"]
        assert sharded["episodes"] == EVAL_EPISODES
        assert sharded["per_episode"] == pytest.approx(whole["per_episode"], abs=1e-7)  # same order
        assert sharded["acc"] == pytest.approx(whole["acc"], abs=1e-9)
        assert sharded["ci95"] == pytest.approx(whole["ci95"], abs=1e-9)
        assert sharded["fingerprint"] == whole["fingerprint"]
    # `metakd eval` under the 2-process job: rank 0 wrote the JSON, equal to a single-process evaluation
    alone = evaluate_checkpoint(work / "full" / "last.pt", episodes=EVAL_EPISODES, split="val", device="cpu",
                                batch_size=2, progress=False, out=work / "eval_alone.json")
    written = json.loads((work / "eval_sharded.json").read_text())
    for key in ("accuracy", "ci95", "episodes", "episodes_fingerprint"):
        assert written[key] == pytest.approx(alone[key]) if isinstance(alone[key], float) else written[key] == alone[key]


def test_indivisible_meta_batch_is_a_clear_error(job):
    for rank in job["ranks"]:
        msg = rank["indivisible"]
        assert msg is not None and "train.meta_batch=3 is not divisible by the world size 2" in msg
    with pytest.raises(ConfigError, match="not divisible by the world size 4"):
        DistContext(rank=1, world_size=4).shard(6)
    assert DistContext(rank=1, world_size=4).shard(8) == slice(2, 4)
    assert DistContext().shard(3) == slice(0, 3)


def test_config_mismatch_across_ranks_is_a_clear_error(job):
    for rank in job["ranks"]:
        msg = rank["mismatch"]
        assert msg is not None and "different configs" in msg and "rank 1 differs at train.lr" in msg
        assert rank["after_errors"] == [0, 1]


def test_dead_rank_stops_the_others_with_a_message(tmp_path):
    codes = launch(_rank_dies, tmp_path, timeout=120)
    assert codes[1] == 3
    report = json.loads((tmp_path / "rank0_death.json").read_text())
    assert "probably died or stalled" in report["message"] and "rank 0/2" in report["message"], report


def test_environment_settings(monkeypatch):
    from metakd.engine.runs.distributed import choose_backend, timeout_seconds

    monkeypatch.delenv("METAKD_DIST_BACKEND", raising=False)
    assert choose_backend(torch.device("cpu")) == "gloo" and choose_backend(torch.device("cuda", 0)) == "nccl"
    monkeypatch.setenv("METAKD_DIST_BACKEND", "GLOO")
    assert choose_backend(torch.device("cuda", 0)) == "gloo"
    monkeypatch.setenv("METAKD_DIST_BACKEND", "tcp")
    with pytest.raises(ConfigError, match="METAKD_DIST_BACKEND"):
        choose_backend(torch.device("cpu"))
    monkeypatch.setenv("METAKD_DIST_TIMEOUT", "90")
    assert timeout_seconds() == 90.0
    monkeypatch.setenv("METAKD_DIST_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="METAKD_DIST_TIMEOUT"):
        timeout_seconds()
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not init_distributed(torch.device("cpu")).active
