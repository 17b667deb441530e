"""Augmentation presets that fit the data (natural / glyph), carried with the normalisation on EpisodeBatch,
used by MSD's views and the augmented test scenario; the MSD protocol configs."""
from __future__ import annotations

import pickle
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import pytest
import torch

from _format_fixtures import write_class_folders, write_omniglot
from metakd.config import load_config
from metakd.data import EpisodeSampler, ImageSplit, default_preset, load_split
from metakd.data.augment import (GLYPH, NATURAL, PRESETS, SCENARIO_LEVELS, AugmentStrengths, _pipeline, augment_views,
                                 batch_preset, perturb_batch)
from metakd.data.episode import EpisodeBatch
from metakd.data.sampler import ImageConverter, make_batch
from metakd.engine.evaluation.robustness import robustness_table, scenario_notes
from metakd.errors import ConfigError
from metakd.learners import build_learner
from metakd.learners import msd as msd_module

from learner_helpers import TinyNet

PAPER_FIVE = [K.RandomResizedCrop, K.ColorJitter, K.RandomGrayscale, K.RandomGaussianBlur, K.RandomHorizontalFlip]


def all_strengths(preset):
    return {"views": preset.views, **preset.levels}


# ------------------------------------------------------------------ the presets


@pytest.mark.parametrize("channels", [1, 3])
def test_glyph_preset_never_flips_and_changes_no_colour(channels):
    for where, s in all_strengths(GLYPH).items():
        assert s.flip_p == 0 and s.grayscale_p == 0, where
        assert s.brightness == 0 and s.saturation == 0 and s.hue == 0, where  # contrast is the one photometric change
        steps = _pipeline(s, (28, 28), channels)
        kinds = {type(step) for step in steps}
        assert K.RandomHorizontalFlip not in kinds and K.RandomVerticalFlip not in kinds, where
        assert K.RandomGrayscale not in kinds, where
        assert s.rotation_degrees <= 20 and s.blur_kernel == 3, where
    # a left-right asymmetric image: no glyph view is ever its mirror image
    x = torch.zeros(1, 1, 28, 28)
    x[..., 6:22, 4:9] = 1.0  # a vertical stroke on the left only
    views = augment_views(x, 64, GLYPH.views, seed=0).flatten(0, 1)
    assert all(v[..., :14].sum() > 4 * v[..., 14:].sum() for v in views)


def test_natural_preset_is_the_papers_five_and_scenario_levels_are_its_levels():
    steps = _pipeline(NATURAL.views, (32, 32), 3)
    assert [type(s) for s in steps] == PAPER_FIVE
    assert NATURAL.views == AugmentStrengths() and NATURAL.views.rotation_p == 0
    assert SCENARIO_LEVELS is NATURAL.levels and set(SCENARIO_LEVELS) == {"weak", "strong", "ood"}
    assert all(NATURAL.levels[k].flip_p > 0 and NATURAL.levels[k].jitter_p > 0 for k in ("weak", "strong"))
    assert set(PRESETS) == {"natural", "glyph"}
    assert PRESETS["glyph"].as_dict()["levels"]["strong"]["flip_p"] == 0.0


def test_strength_options_are_relative_to_the_preset():
    assert AugmentStrengths.from_options(None, preset="glyph") == GLYPH.views
    assert AugmentStrengths.from_options("strong", preset="glyph") == GLYPH.levels["strong"]
    assert AugmentStrengths.from_options("natural", preset="glyph") == NATURAL.views
    on_glyphs = AugmentStrengths.from_options({"crop_scale": [0.5, 1.0]}, preset="glyph")
    assert on_glyphs.crop_scale == (0.5, 1.0) and on_glyphs.flip_p == 0
    pinned = AugmentStrengths.from_options({"preset": "natural", "flip_p": 0.0}, preset="glyph")
    assert pinned == AugmentStrengths(flip_p=0.0)
    with pytest.raises(ConfigError, match="preset"):
        AugmentStrengths.from_options({"preset": "sketch"})


# ------------------------------------------------------------------ the data selects it


def test_preset_follows_the_dataset_and_the_override(tmp_path):
    write_class_folders(tmp_path / "photos", splits=("train",), n_classes=3, per_class=2, size=12)
    write_omniglot(tmp_path / "omni", background=2, evaluation=1, chars=2, drawers=2, size=12)
    photos = load_split("folder", str(tmp_path / "photos"), "train", image_size=12)
    omni = load_split("folder", str(tmp_path / "omni"), "train", image_size=12)
    assert photos.meta["augment_preset"] == "natural" and omni.meta["augment_preset"] == "glyph"
    forced = load_split("folder", str(tmp_path / "photos"), "train", image_size=12, augment_preset="glyph")
    assert forced.meta["augment_preset"] == "glyph"
    with pytest.raises(ConfigError, match="augment_preset"):
        load_split("folder", str(tmp_path / "photos"), "train", image_size=12, augment_preset="photo")
    blank = ImageSplit(np.zeros((4, 8, 8, 3), np.uint8), np.arange(4) % 2, ["a", "b"])
    for dataset, want in [("mini_imagenet", "natural"), ("tiered_imagenet", "natural"), ("cifar_fs", "natural"),
                          ("fc100", "natural"), ("cifar100", "natural"), ("glyphs", "glyph"), ("someone_elses", "natural")]:
        assert default_preset(dataset, blank) == want, dataset
    # the sampler carries the split's preset onto its batches
    for split, want in [(photos, "natural"), (omni, "glyph"), (forced, "glyph"), (blank, "natural")]:
        s = EpisodeSampler(split, 2, 1, 1)
        assert s.augment_preset == want and s.sample(2).augment_preset == want and s.summary()["augment_preset"] == want
    assert EpisodeSampler(photos, 2, 1, 1, augment_preset="glyph").sample(1).augment_preset == "glyph"
    with pytest.raises(ConfigError, match="augment_preset"):
        EpisodeSampler(photos, 2, 1, 1, augment_preset="photo")


def test_the_glyph_demo_selects_the_glyph_preset():
    from metakd.engine.assembly import make_sampler, split_for

    for name in ("demo_msd", "demo_maml", "msd_maml_glyphs_5w1s"):
        cfg = load_config(name)
        sampler = make_sampler(cfg, split_for(cfg, "test"), q_query=2, device=torch.device("cpu"), normalize=None)
        batch = sampler.batch(sampler.fixed_episodes(2))
        assert batch.augment_preset == "glyph", name
        assert batch_preset(batch).levels["strong"].flip_p == 0 and batch_preset(batch).views.flip_p == 0
    cfg = load_config("demo_msd", ["data.options.augment_preset=natural"])
    assert split_for(cfg, "test").meta["augment_preset"] == "natural"


# ------------------------------------------------------------------ EpisodeBatch carries preset and normalisation


def tiny_batch(**extra):
    g = torch.Generator().manual_seed(0)
    return EpisodeBatch(torch.rand(4, 2, 1, 8, 8, generator=g), torch.arange(2).repeat(4, 1),
                        torch.rand(4, 2, 1, 8, 8, generator=g), torch.arange(2).repeat(4, 1), 2, 1, 1,
                        torch.arange(2).repeat(4, 1), **extra)


def test_episode_batch_carries_preset_and_normalisation_through_to_task_split_and_perturb():
    b = tiny_batch(augment_preset="glyph", mean=(0.5,), std=(0.25,))
    parts = [b.to("cpu"), b.task(2), *b.split(3), perturb_batch(b, [0, 1, 2, 3], "weak", "both")]
    for part in parts:
        assert (part.augment_preset, part.mean, part.std) == ("glyph", (0.5,), (0.25,))
    assert [p.num_tasks for p in b.split(3)] == [3, 1]
    plain = EpisodeBatch(b.support_x, b.support_y, b.query_x, b.query_y, 2, 1, 1)  # old constructor calls still work
    assert plain.augment_preset is None and plain.mean is None and plain.task(0).std is None
    assert batch_preset(plain).name == "natural" and batch_preset(plain, "glyph").name == "glyph"
    # batches built in DataLoader workers get them from the (pickled) converter
    conv = pickle.loads(pickle.dumps(ImageConverter(torch.float32, (0.5,), (0.25,), "glyph")))
    split = ImageSplit(np.zeros((4, 8, 8, 1), np.uint8), np.arange(4) % 2, ["a", "b"])
    sampler = EpisodeSampler(split, 2, 1, 1)
    made = make_batch(sampler.gather(sampler.sample_episodes(2)), conv)
    assert (made.augment_preset, made.mean, made.std) == ("glyph", (0.5,), (0.25,))


# ------------------------------------------------------------------ normalised datasets


def normalised_pair():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(24, 12, 12, 1), dtype=np.uint8)
    split = ImageSplit(images, np.arange(24) % 4, ["a", "b", "c", "d"], meta={"augment_preset": "natural"})
    plain = EpisodeSampler(split, 3, 2, 2)
    norm = EpisodeSampler(split, 3, 2, 2, normalize=((0.45,), (0.2,)))
    episodes = plain.fixed_episodes(2)
    return plain.batch(episodes), norm.batch(episodes)


def test_normalised_batches_are_augmented_on_their_pixels_without_clamping_the_normalised_values():
    pb, nb = normalised_pair()
    assert pb.mean is None and nb.mean == (0.45,) and nb.std == (0.2,)
    assert nb.support_x.min() < -1.5 and nb.support_x.max() > 2.5  # normalised values well outside [0, 1]
    for strengths in (NATURAL.views, GLYPH.views):
        a = augment_views(pb.support_x, 3, strengths, seed=11)
        b = augment_views(nb.support_x, 3, strengths, seed=11, mean=nb.mean, std=nb.std)
        assert b.min() < -1.5 and b.max() > 2.5  # not clamped to [0, 1] in the normalised scale
        torch.testing.assert_close(b * 0.2 + 0.45, a, atol=2e-5, rtol=0)
    for side in ("support", "both"):  # the scenario reads the normalisation from the batch
        a = perturb_batch(pb, [0, 1], "strong", side, seed=3)
        b = perturb_batch(nb, [0, 1], "strong", side, seed=3)
        torch.testing.assert_close(b.support_x * 0.2 + 0.45, a.support_x, atol=2e-5, rtol=0)
        torch.testing.assert_close(b.query_x * 0.2 + 0.45, a.query_x, atol=2e-5, rtol=0)


def capture_views(monkeypatch):
    seen = {}
    real = msd_module.augment_views

    def spy(x, n, strengths, **kwargs):
        seen.update(strengths=strengths, **kwargs)
        return real(x, n, strengths, **kwargs)
    monkeypatch.setattr(msd_module, "augment_views", spy)
    return seen


def msd(**options):
    torch.manual_seed(0)
    return build_learner("msd", TinyNet(n_way=3, size=12), host="maml", views=2, inner_lr=0.1, train_steps=1, **options)


def test_msd_takes_normalisation_and_preset_from_the_batch(monkeypatch):
    seen = capture_views(monkeypatch)
    pb, nb = normalised_pair()
    msd().meta_loss(nb)
    assert seen["mean"] == [0.45] and seen["std"] == [0.2] and seen["strengths"] == NATURAL.views
    glyph = tiny_batch(augment_preset="glyph")
    two_way = dict(host="maml", views=2, inner_lr=0.1, train_steps=1)
    build_learner("msd", TinyNet(n_way=2, size=8), **two_way).meta_loss(glyph)
    assert seen["strengths"] == GLYPH.views and seen["mean"] is None
    build_learner("msd", TinyNet(n_way=2, size=8), **two_way, augment="natural").meta_loss(glyph)
    assert seen["strengths"] == NATURAL.views
    build_learner("msd", TinyNet(n_way=2, size=8), **two_way, augment={"crop_scale": [0.5, 1.0]}).meta_loss(glyph)
    assert seen["strengths"].crop_scale == (0.5, 1.0) and seen["strengths"].flip_p == 0
    # an explicit normalize option agreeing with the batch is fine, a different one is an error
    msd(normalize=[[0.45], [0.2]]).meta_loss(nb)
    with pytest.raises(ConfigError, match="disagrees"):
        msd(normalize=[[0.5], [0.25]]).meta_loss(nb)
    # a batch without normalisation (built by hand) uses the option
    msd(normalize=[[0.5], [0.25]]).meta_loss(pb)
    assert seen["mean"] == [0.5] and seen["std"] == [0.25]


def test_msd_views_of_a_normalised_batch_match_the_plain_ones(monkeypatch):
    pb, nb = normalised_pair()
    real = msd_module.augment_views
    out = {}
    for key, batch in (("plain", pb), ("norm", nb)):
        monkeypatch.setattr(msd_module, "augment_views", lambda *a, _key=key, **k: out.setdefault(_key, real(*a, **k)))
        learner = msd()
        torch.manual_seed(7)  # MSD draws its views' seed from the global RNG
        learner.meta_loss(batch)
    assert out["norm"].min() < -1.5  # normalised values, not clamped to [0, 1]
    torch.testing.assert_close(out["norm"] * 0.2 + 0.45, out["plain"], atol=2e-5, rtol=0)


# ------------------------------------------------------------------ robustness names its preset


def test_robustness_table_and_notes_name_the_preset():
    model = {"name": "m", "run": "m", "learner": "maml", "learner_options": {}, "augment_preset": "glyph",
             "rows": [{"level": "strong", "side": "support", "accuracy": 0.5, "ci95": 0.1, "episodes": 4}]}
    table = robustness_table([model])
    assert "| preset |" in table and "| glyph |" in table
    notes = scenario_notes(["glyph"])
    assert "'glyph'" in notes and "flip_p=0.0" in notes and "'natural'" not in notes


# ------------------------------------------------------------------ the MSD protocol configs

HOSTS = ("maml", "unicorn_maml")
DATA = ("mini", "tiered", "glyphs")
VARIANTS = ("", "inplace_", "pretrained_", "pretrained_inplace_")
NAMES = [f"msd_{h}_{v}{d}_5w{k}s" for h in HOSTS for v in VARIANTS for d in DATA for k in (1, 5)]


@pytest.mark.parametrize("name", NAMES)
def test_msd_protocol_configs_load(name):
    cfg = load_config(name)
    o = cfg["learner"]["options"]
    assert cfg["name"] == name and cfg["learner"]["name"] == "msd" and o["host"] in HOSTS and name.startswith(f"msd_{o['host']}_")
    assert o["budget"] == ("in_place_of_tasks" if "inplace_" in name else "per_task")
    assert (cfg["model"]["init"] is not None) == ("pretrained_" in name)
    assert o["augment"] is None and o["lam"] == 1.0 and o["on"] == "prob"
    if o["budget"] == "in_place_of_tasks":  # the views take the place of tasks: as many adapted copies as tasks
        t = cfg["train"]["meta_batch"]
        assert t % o["views"] == 0 or t < o["views"]


@pytest.mark.parametrize("host,data,pretrain,channels,size", [
    ("maml", "glyphs", "pretrain_conv4_glyphs", 1, 28), ("unicorn_maml", "glyphs", "pretrain_conv4_glyphs", 1, 28),
    ("maml", "mini", "pretrain_conv4_mini", 3, 84), ("unicorn_maml", "mini", "pretrain_resnet12_mini", 3, 84)])
def test_pretrained_configs_fit_their_pretraining_backbone(tmp_path, host, data, pretrain, channels, size):
    import yaml

    from metakd.engine.assembly import make_learner
    from metakd.models import build_backbone

    raw = yaml.safe_load((Path(__file__).parents[1] / "metakd" / "configs" / "pretrain" / f"{pretrain}.yaml").read_text())
    assert f"runs/{raw['name']}/best.pt" == load_config(f"msd_{host}_pretrained_{data}_5w1s")["model"]["init"]
    backbone = build_backbone(raw["model"]["backbone"], 64, in_channels=channels, image_size=size, **raw["model"]["options"])
    path = tmp_path / "best.pt"
    torch.save({"kind": "metakd-pretrain", "config": raw, "model": backbone.state_dict()}, path)
    cfg = load_config(f"msd_{host}_pretrained_{data}_5w1s", [f"model.init={path}"])
    learner = make_learner(cfg, channels, size)
    body = {k: v for k, v in backbone.state_dict().items() if not k.startswith("head.") and "running" not in k
            and "num_batches" not in k}
    state = learner.model.state_dict()
    assert body and all(torch.equal(state[k], v) for k, v in body.items())
