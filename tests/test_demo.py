"""The demo at a tiny budget: it runs end to end, writes its table atomically, re-runs over its own runs,
and never deletes a folder that is not a metakd run."""
import json

import pytest

from metakd.engine.demo import run_demo
from metakd.errors import MetakdError


def test_demo_runs_reruns_and_refuses_foreign_folders(tmp_path, capsys):
    kw = dict(output_dir=tmp_path / "demo", iterations=1, episodes=3, device="cpu", progress=False,
              configs=("demo_protonet",), scenarios=(("strong", "support"),))
    rows = run_demo(**kw)
    assert len(rows) == 1 and rows[0]["episodes"] == 3 and list(rows[0]["scenarios"]) == ["strong support"]
    assert json.loads((tmp_path / "demo" / "results.json").read_text())[0]["learner"] == "protonet"
    assert "protonet" in (tmp_path / "demo" / "results.md").read_text()
    run_demo(**kw)  # over its own previous run: cleared and trained again
    foreign = tmp_path / "other"
    (foreign / "demo_protonet").mkdir(parents=True)
    (foreign / "demo_protonet" / "precious.txt").write_text("keep me")
    with pytest.raises(MetakdError, match="not a metakd run folder"):
        run_demo(**{**kw, "output_dir": foreign})
    assert (foreign / "demo_protonet" / "precious.txt").read_text() == "keep me"
    capsys.readouterr()


def test_demo_writes_one_accuracy_figure_and_says_where(tmp_path, capsys):
    run_demo(output_dir=tmp_path / "demo", iterations=1, episodes=3, device="cpu", progress=False,
             configs=("demo_protonet",), scenarios=(("weak", "support"), ("strong", "support")))
    figure = tmp_path / "demo" / "accuracy.png"
    assert figure.read_bytes().startswith(b"\x89PNG")
    out = capsys.readouterr().out
    assert f"plots: {figure}" in out and str(tmp_path / "demo" / "demo_protonet" / "curves.png") in out
