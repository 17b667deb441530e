"""`metakd robustness` end to end on tiny trained checkpoints (MAML and MAML+MSD), and the eval consistency metric."""
from __future__ import annotations

import json

import pytest
import torch

from metakd.cli import main
from metakd.config import load_config
from metakd.engine.assembly import make_sampler, split_for
from metakd.engine.evaluation.episodes import evaluate_episodes
from metakd import load_learner
from metakd.engine.evaluation.checkpoint_eval import evaluate_checkpoint
from metakd.engine.evaluation.robustness import run_robustness
from metakd.engine.training.meta import Trainer
from metakd.errors import MetakdError

TINY = ["device=cpu", "model.options.hidden=8", "learner.options.train_steps=1", "learner.options.test_steps=1",
        "train.meta_batch=2", "train.iterations=3", "train.val_every=3", "train.val_episodes=4",
        "train.checkpoint_every=3", "train.log_every=3", "episodes.q_query=2", "episodes.test_q_query=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    out = {}
    for name, extra in [("maml_glyphs_5w1s", []), ("msd_maml_glyphs_5w1s", ["learner.options.views=2"])]:
        cfg = load_config(name, [*TINY, f"output_dir={root / name}", *extra])
        Trainer(cfg, progress=False).fit()
        out[name] = root / name
    return out


def test_robustness_writes_table_json_and_chart(runs, tmp_path):
    report = run_robustness([runs["maml_glyphs_5w1s"], runs["msd_maml_glyphs_5w1s"]], out=tmp_path / "r",
                            episodes=6, levels=["standard", "weak", "strong"], sides=["support", "query"],
                            consistency_views=2, device="cpu", progress=False)
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert files == {"robustness.json", "robustness.md", "robustness.png"}
    saved = json.loads((tmp_path / "r" / "robustness.json").read_text())
    assert saved["same_episodes"] and len(saved["models"]) == 2
    for model in saved["models"]:
        assert [(r["level"], r["side"]) for r in model["rows"]] == [
            ("standard", None), ("weak", "support"), ("weak", "query"), ("strong", "support"), ("strong", "query")]
        for r in model["rows"]:
            assert 0 <= r["accuracy"] <= 1 and 0 < r["consistency"] <= 1 + 1e-6 and r["episodes"] == 6
    assert saved["models"][1]["learner"] == "msd"
    md = (tmp_path / "r" / "robustness.md").read_text()
    assert "strong / query" in md and "msd+maml" in md and "crop_scale" in md
    # the glyph data selects the glyph preset: named in the models, the table (what the CLI prints) and the notes
    assert saved["augment_presets"] == ["glyph"] and all(m["augment_preset"] == "glyph" for m in saved["models"])
    assert set(saved["scenario_levels"]) == {"glyph"} and saved["scenario_levels"]["glyph"]["strong"]["flip_p"] == 0
    assert "| glyph |" in report["table"] and "Augmentation preset 'glyph'" in md and "preset glyph" in md
    assert (tmp_path / "r" / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    # the standard row is the plain evaluation of the same fixed episodes
    plain = evaluate_checkpoint(runs["maml_glyphs_5w1s"], episodes=6, device="cpu", progress=False,
                                out=tmp_path / "e.json", consistency_views=2)
    std = saved["models"][0]["rows"][0]
    assert plain["accuracy"] == std["accuracy"] and plain["consistency"] == pytest.approx(std["consistency"])
    assert plain["episodes_fingerprint"] == saved["models"][0]["episodes_fingerprint"]
    assert "| " in report["table"]


def test_robustness_cli_and_errors(runs, tmp_path, capsys):
    rc = main(["robustness", str(runs["msd_maml_glyphs_5w1s"]), "--episodes", "4", "--levels", "strong",
               "--sides", "both", "--consistency-views", "0", "--device", "cpu", "--no-progress", "--out",
               str(tmp_path / "cli")])
    assert rc == 0
    saved = json.loads((tmp_path / "cli" / "robustness.json").read_text())
    assert [(r["level"], r["side"]) for r in saved["models"][0]["rows"]] == [("strong", "both")]
    assert "consistency" not in saved["models"][0]["rows"][0]
    assert "strong / both" in capsys.readouterr().out
    with pytest.raises(MetakdError, match="level"):
        run_robustness([runs["maml_glyphs_5w1s"]], levels=["medium"], device="cpu", progress=False)
    with pytest.raises(MetakdError, match="preset"):
        run_robustness([runs["maml_glyphs_5w1s"]], preset="photo", device="cpu", progress=False)
    forced = run_robustness([runs["maml_glyphs_5w1s"]], out=tmp_path / "nat", episodes=2, levels=["weak"],
                            sides=["support"], consistency_views=0, device="cpu", progress=False, preset="natural")
    assert forced["augment_presets"] == ["natural"] and "| natural |" in forced["table"]
    assert main(["robustness", str(tmp_path / "missing.pt"), "--device", "cpu"]) == 2


def test_consistency_metric_for_protonet_and_is_reproducible(runs):
    learner, ckpt = load_learner(runs["maml_glyphs_5w1s"] / "best.pt", device="cpu")
    cfg = ckpt["config"]
    sampler = make_sampler(cfg, split_for(cfg, "test"), q_query=2, device=torch.device("cpu"), normalize=None)
    eps = sampler.fixed_episodes(4, 0)
    a = evaluate_episodes(learner, sampler, eps, batch_size=3, progress=False, consistency_views=3)
    b = evaluate_episodes(learner, sampler, eps, batch_size=4, progress=False, consistency_views=3)
    assert a["per_episode_consistency"] == pytest.approx(b["per_episode_consistency"], abs=1e-6)
    assert a["per_episode"] == b["per_episode"]
    from metakd.learners import build_learner

    proto = build_learner("protonet", learner.model).eval()
    res = evaluate_episodes(proto, sampler, eps, progress=False, consistency_views=2, scenario=("weak", "support"))
    assert 0 < res["consistency"] <= 1 + 1e-6
    with pytest.raises(MetakdError, match="consistency_views"):
        evaluate_episodes(learner, sampler, eps, progress=False, consistency_views=1)
