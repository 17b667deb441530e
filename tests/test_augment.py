"""Augmentations: per-view draws, seeded reproducibility, identity, and the augmented test scenario."""
from __future__ import annotations

import pytest
import torch

from metakd.data.augment import (SCENARIO_LEVELS, AugmentStrengths, augment_images, augment_views, episode_seed,
                                 perturb_batch)
from metakd.data.episode import EpisodeBatch
from metakd.errors import ConfigError, DataError


def batch(tasks=4, channels=1, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(tasks, 6, channels, size, size, generator=g)
    qx = torch.rand(tasks, 9, channels, size, size, generator=g)
    sy = torch.arange(3).repeat_interleave(2).repeat(tasks, 1)
    qy = torch.arange(3).repeat_interleave(3).repeat(tasks, 1)
    return EpisodeBatch(sx, sy, qx, qy, 3, 2, 3)


@pytest.mark.parametrize("channels", [1, 3])
def test_views_are_distinct_seeded_and_leave_global_rng_alone(channels):
    x = batch(channels=channels).support_x
    state = torch.get_rng_state()
    a = augment_views(x, 3, AugmentStrengths(), seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (3, *x.shape) and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0], x)
    assert torch.equal(a, augment_views(x, 3, AugmentStrengths(), seed=7))
    assert not torch.equal(a, augment_views(x, 3, AugmentStrengths(), seed=8))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(augment_views(x, 2, AugmentStrengths(), generator=g1),
                       augment_views(x, 2, AugmentStrengths(), generator=g2))


def test_identity_returns_exact_copies_and_normalised_images_round_trip():
    x = batch().support_x
    v = augment_views(x, 4, AugmentStrengths.identity())
    assert all(torch.equal(v[j], x) for j in range(4))
    mean, std = [0.5], [0.25]
    xn = (x - 0.5) / 0.25
    only_flip = AugmentStrengths(crop_p=0, rotation_p=0, jitter_p=0, grayscale_p=0, blur_p=0, flip_p=1.0)
    out = augment_images(xn, only_flip, seed=0, mean=mean, std=std)
    assert torch.allclose(out, xn.flip(-1), atol=1e-5)


def test_strength_options_are_validated():
    assert AugmentStrengths.from_options("weak") == SCENARIO_LEVELS["weak"]
    assert AugmentStrengths.from_options({"flip_p": 0}).flip_p == 0.0
    for bad, match in [({"blur_kernel": 4}, "odd integer"), ({"crop_scale": [0.5]}, "pair"),
                       ({"rotation_p": -1}, ">= 0"), ("medium", "identity"), ({"jitter_p": 1.5}, r"\[0, 1\]")]:
        with pytest.raises(ConfigError, match=match):
            AugmentStrengths.from_options(bad)
    with pytest.raises(DataError, match="1 or 3 channels"):
        augment_images(torch.rand(2, 2, 8, 8), AugmentStrengths(), seed=0)


@pytest.mark.parametrize("side", ["support", "query", "both"])
def test_scenario_perturbs_only_the_chosen_side_reproducibly(side):
    b = batch()
    idx = [0, 1, 2, 3]
    p = perturb_batch(b, idx, "strong", side, seed=5)
    assert torch.equal(p.support_x, b.support_x) == (side == "query")
    assert torch.equal(p.query_x, b.query_x) == (side == "support")
    assert torch.equal(p.support_y, b.support_y) and torch.equal(p.query_y, b.query_y)
    again = perturb_batch(b, idx, "strong", side, seed=5)
    assert torch.equal(p.support_x, again.support_x) and torch.equal(p.query_x, again.query_x)
    other = perturb_batch(b, idx, "strong", side, seed=6)
    changed = p.query_x if side == "query" else p.support_x
    assert not torch.equal(changed, other.query_x if side == "query" else other.support_x)


def test_weak_and_strong_differ_and_strong_moves_pixels_more():
    b = batch()
    weak = perturb_batch(b, [0, 1, 2, 3], "weak", "support", seed=0).support_x
    strong = perturb_batch(b, [0, 1, 2, 3], "strong", "support", seed=0).support_x
    assert not torch.equal(weak, strong)
    assert (strong - b.support_x).abs().mean() > (weak - b.support_x).abs().mean()


def test_an_episode_is_perturbed_the_same_in_any_batch():
    b = batch()
    whole = perturb_batch(b, [10, 11, 12, 13], "weak", "both", seed=1)
    alone = perturb_batch(b.task(2), [12], "weak", "both", seed=1)
    assert torch.equal(whole.support_x[2], alone.support_x[0]) and torch.equal(whole.query_x[2], alone.query_x[0])
    assert episode_seed(1, 12, "weak:support") != episode_seed(1, 12, "weak:query")


def test_scenario_names_are_checked():
    with pytest.raises(ConfigError, match="side"):
        perturb_batch(batch(), [0, 1, 2, 3], "weak", "labels")
    with pytest.raises(ConfigError, match="level"):
        perturb_batch(batch(), [0, 1, 2, 3], "medium", "support")


def test_ood_level_adds_noise_and_occlusion_that_no_preset_trains_on():
    from metakd.data.augment import OOD, PRESETS

    for p in PRESETS.values():  # outside the family: no preset's MSD views or in-family levels use either step
        assert all(s.noise_p == 0 and s.erase_p == 0 for s in (p.views, p.levels["weak"], p.levels["strong"]))
        assert p.levels[OOD].noise_p == 1.0 and p.levels[OOD].erase_p > 0 and p.levels[OOD].crop_p == 0
    x = torch.full((64, 1, 16, 16), 0.5)
    only_noise = AugmentStrengths(**{**AugmentStrengths.identity().as_dict(), "noise_p": 1.0, "noise_std": 0.1})
    noisy = augment_images(x, only_noise, seed=0)
    assert 0.08 < (noisy - x).std() < 0.12 and torch.equal(noisy, augment_images(x, only_noise, seed=0))
    only_erase = AugmentStrengths(**{**AugmentStrengths.identity().as_dict(), "erase_p": 1.0, "erase_scale": (0.1, 0.2)})
    erased = augment_images(x, only_erase, seed=0)
    zeroed = (erased == 0).flatten(1).float().mean(1)  # one black rectangle of 10-20% of each image, the rest kept
    assert ((zeroed > 0.05) & (zeroed < 0.3)).all() and torch.equal(erased[erased != 0], x[erased != 0])
    b = batch()
    p = perturb_batch(b, [0, 1, 2, 3], OOD, "query", seed=0, preset="glyph")
    assert torch.equal(p.support_x, b.support_x) and not torch.equal(p.query_x, b.query_x)
    with pytest.raises(ConfigError, match=r"erase_scale: expected 0 < low <= high < 1"):
        AugmentStrengths.from_options({"erase_scale": [0.5, 1.0]})


def test_robustness_accepts_the_ood_level_by_name_only():
    from metakd.engine.evaluation.robustness import STANDARD, evaluate_robustness, scenarios

    assert ("ood", "both") in scenarios([STANDARD, "ood"], ["both"])
    import inspect
    assert "ood" not in inspect.signature(evaluate_robustness).parameters["levels"].default
