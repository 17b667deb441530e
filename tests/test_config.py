"""Configs: inheritance, overrides, strict keys and types, every shipped config valid."""
import pytest

from metakd.config import available_configs, load_config, parse_overrides, validate
from metakd.errors import ConfigError


def test_every_shipped_config_loads_and_builds_its_parts():
    from metakd.learners import LEARNERS
    from metakd.models import BACKBONES

    names = available_configs()
    for learner in ("maml", "fomaml", "anil", "boil", "metasgd", "protonet"):
        for ds in ("mini", "tiered", "glyphs"):
            for k in (1, 5):
                assert f"{learner}_{ds}_5w{k}s" in names
    for name in names:
        cfg = load_config(name)
        assert cfg["name"] == name
        assert cfg["learner"]["name"] in LEARNERS
        assert cfg["model"]["backbone"] in BACKBONES


def test_published_maml_settings():
    cfg = load_config("maml_mini_5w1s")
    assert cfg["model"] == {"backbone": "conv4", "options": {"hidden": 32, "bn": "transductive"}, "init": None}
    assert cfg["learner"]["options"] == {"inner_lr": 0.01, "train_steps": 5, "test_steps": 10}
    assert (cfg["train"]["meta_batch"], cfg["train"]["lr"], cfg["train"]["iterations"]) == (4, 0.001, 60000)
    assert (cfg["episodes"]["n_way"], cfg["episodes"]["k_shot"], cfg["episodes"]["q_query"]) == (5, 1, 15)
    assert cfg["eval"]["episodes"] == 600
    assert cfg["data"]["dataset"] == "mini_imagenet"


def test_inheritance_and_overrides(tmp_path):
    (tmp_path / "parent.yaml").write_text("train:\n  lr: 0.5\n  meta_batch: 8\nlearner:\n  name: anil\n")
    (tmp_path / "child.yaml").write_text("inherit: parent.yaml\ntrain:\n  meta_batch: 2\n")
    cfg = load_config(str(tmp_path / "child.yaml"), ["train.iterations=7", "learner.options.first_order=true"])
    assert cfg["train"]["lr"] == 0.5 and cfg["train"]["meta_batch"] == 2 and cfg["train"]["iterations"] == 7
    assert cfg["learner"] == {"name": "anil", "options": {"first_order": True}}
    assert cfg["name"] == "child"


def test_circular_inheritance(tmp_path):
    (tmp_path / "a.yaml").write_text("inherit: b.yaml\n")
    (tmp_path / "b.yaml").write_text("inherit: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(str(tmp_path / "a.yaml"))


@pytest.mark.parametrize("override, match", [
    ("train.lerning_rate=0.1", r"unknown key 'train.lerning_rate'.*valid keys of 'train':.*lr"),
    ("trian.lr=0.1", r"unknown key 'trian'.*valid top-level keys"),
    ("train.meta_batch=four", r"'train.meta_batch' expected int, got 'four'"),
    ("train.optimizer=rmsprop", r"'train.optimizer' must be one of adam, adamw, sgd"),
    ("episodes.k_shot=0", r"episodes.k_shot must be >= 1"),
    ("train.lr", r"must look like section.key=value"),
])
def test_bad_keys_and_types_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("maml_glyphs_5w1s", [override])


def test_int_accepted_for_float_and_bool_rejected_for_int():
    assert validate({"train": {"lr": 1}})["train"]["lr"] == 1.0
    with pytest.raises(ConfigError, match="train.meta_batch"):
        validate({"train": {"meta_batch": True}})


def test_unknown_config_name_says_how_to_list_them():
    with pytest.raises(ConfigError, match="not found.*closest configs: maml_mini_5w1s.*`metakd list configs"):
        load_config("maml_mini_5w1")


def test_bad_yaml_names_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(str(bad))


def test_parse_overrides_nested_values():
    assert parse_overrides(["a.b.c=1", "a.d=[1, 2]", "e=null"]) == {"a": {"b": {"c": 1}, "d": [1, 2]}, "e": None}


def test_off_on_yes_no_stay_strings_in_files_and_overrides(tmp_path):
    """YAML 1.2 booleans: `amp: off`, `task_batching: off` and MSD's `on:` key keep their meaning."""
    from metakd.engine.assembly import make_learner

    path = tmp_path / "mine.yaml"
    path.write_text("inherit: msd_maml_glyphs_5w1s\nname: mine\nlearner:\n  options:\n    on: logit\n"
                    "    host_options:\n      amp: off\n      task_batching: off\n      first_order: true\n")
    cfg = load_config(str(path), ["learner.options.host_options.compile=false"])
    opts = cfg["learner"]["options"]
    assert opts["on"] == "logit" and True not in opts
    assert opts["host_options"] == {"amp": "off", "task_batching": "off", "first_order": True, "compile": False}
    learner = make_learner(cfg, 1, 28)
    assert learner.options["on"] == "logit"
    assert parse_overrides(["a.b=off", "a.c=yes", "a.d=TRUE"]) == {"a": {"b": "off", "c": "yes", "d": True}}
