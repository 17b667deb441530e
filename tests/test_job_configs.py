"""`metakd config` prints every job's configs, and a user's YAML may inherit a shipped pre-training config by name."""
from metakd.cli import main
from metakd.engine.training.job_config import job_of, load_pretrain_config


def test_config_command_prints_pretrain_and_distill_configs(capsys):
    assert main(["config", "pretrain_conv4_glyphs"]) == 0
    out = capsys.readouterr().out
    assert "name: pretrain_conv4_glyphs" in out and "epochs:" in out  # the pre-training schema, not the few-shot one
    assert main(["config", "distill_glyphs_kd", "train.epochs=3"]) == 0
    out = capsys.readouterr().out
    assert "student:" in out and "epochs: 3" in out


def test_a_users_pretrain_yaml_inherits_a_shipped_one_by_name(tmp_path, capsys):
    mine = tmp_path / "my_pretrain.yaml"
    mine.write_text("inherit: pretrain_conv4_glyphs\nname: mine\ntrain:\n  epochs: 2\n")
    cfg = load_pretrain_config(str(mine))
    assert cfg["name"] == "mine" and cfg["train"]["epochs"] == 2
    assert cfg["model"]["backbone"] == load_pretrain_config("pretrain_conv4_glyphs")["model"]["backbone"]
    assert job_of(str(mine)) == "train"  # a file outside a pretrain/ folder: say the job
    assert main(["config", str(mine), "--job", "pretrain"]) == 0
    assert "name: mine" in capsys.readouterr().out
    pre = tmp_path / "pretrain"
    pre.mkdir()
    (pre / "b.yaml").write_text("inherit: pretrain_conv4_glyphs\n")
    assert job_of(str(pre / "b.yaml")) == "pretrain"
