"""Episode sampler: shapes, label remapping traced through pixels, determinism, resume, DataLoader, errors."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from metakd.data.base import ImageSplit
from metakd.data.loader import EpisodeDataset, EpisodeIndexSampler, EpisodeLoader
from metakd.data.sampler import (
    Episode, EpisodeSampler, ImageConverter, _shuffle_prefix, channel_stats, episodes_fingerprint,
)
from metakd.errors import ConfigError, DataError


def make_split(num_classes: int = 10, per_class=30, channels: int = 3, hw: int = 6, seed: int = 0) -> ImageSplit:
    """Images whose first pixels encode their own row (low byte, high byte) in channel 0; labels shuffled."""
    rng = np.random.default_rng(seed)
    counts = [per_class] * num_classes if isinstance(per_class, int) else list(per_class)
    labels = np.repeat(np.arange(num_classes), counts)
    rng.shuffle(labels)
    n = len(labels)
    images = rng.integers(0, 256, size=(n, hw, hw, channels), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256
    images[:, 0, 1, 0] = np.arange(n) // 256
    return ImageSplit(images, labels, [f"class{c:02d}" for c in range(num_classes)], name="toy/train",
                      source="/data/toy/train.pkl")


def decode(x: torch.Tensor, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """Image rows encoded in float images (..., C, H, W) that were scaled to [0, 1] then normalised."""
    px = (x[..., 0, 0, :2].double() * std + mean) * 255.0
    px = px.round().long().numpy()
    return px[..., 0] + 256 * px[..., 1]


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_dtypes_and_pixels(channels):
    split = make_split(channels=channels)
    s = EpisodeSampler(split, n_way=5, k_shot=2, q_query=3, seed=1)
    b = s.sample(4)
    assert b.support_x.shape == (4, 10, channels, 6, 6) and b.query_x.shape == (4, 15, channels, 6, 6)
    assert b.support_x.dtype == torch.float32 and b.support_y.dtype == torch.int64
    assert b.query_y.shape == (4, 15) and b.classes.shape == (4, 5) and b.classes.dtype == torch.int64
    assert (b.n_way, b.k_shot, b.q_query, b.num_tasks) == (5, 2, 3, 4)
    assert b.support_x.is_contiguous() and b.query_x.is_contiguous()
    rows = decode(b.support_x)
    expected = torch.from_numpy(split.images[rows]).permute(0, 1, 4, 2, 3).float() / 255.0
    assert torch.equal(b.support_x, expected)
    assert 0.0 <= float(b.query_x.min()) and float(b.query_x.max()) <= 1.0


def test_label_remapping_traced_through_pixels():
    split = make_split()
    s = EpisodeSampler(split, n_way=5, k_shot=3, q_query=4, seed=2)
    for _ in range(5):
        b = s.sample(6)
        for t in range(6):
            assert b.support_y[t].tolist() == np.repeat(np.arange(5), 3).tolist()  # class-major
            assert b.query_y[t].tolist() == np.repeat(np.arange(5), 4).tolist()
            classes = b.classes[t].numpy()
            assert len(set(classes.tolist())) == 5
            for x, y in ((b.support_x[t], b.support_y[t]), (b.query_x[t], b.query_y[t])):
                rows = decode(x)
                assert np.array_equal(split.labels[rows], classes[y.numpy()])  # label i -> classes[i]


def test_no_image_twice_within_an_episode():
    s = EpisodeSampler(make_split(num_classes=6, per_class=8), n_way=6, k_shot=3, q_query=5, seed=3)
    for e in s.sample_episodes(200) + s.fixed_episodes(200):
        support, query = set(e.support.ravel().tolist()), set(e.query.ravel().tolist())
        assert len(support) == e.support.size and len(query) == e.query.size
        assert not support & query
        assert len(support | query) == 48  # every image of every class used exactly once (K+Q = per class)


def test_shuffle_prefix_is_uniform_and_distinct():
    keys = np.random.default_rng(0).integers(0, 2**63, size=30_000, dtype=np.int64).astype(np.uint64)
    full = _shuffle_prefix(keys, np.zeros(len(keys), np.int64), np.full(len(keys), 6), 6)
    assert all(sorted(r) == list(range(6)) for r in full.tolist())
    freq = np.stack([np.bincount(full[:, j], minlength=6) for j in range(6)]) / len(keys)
    assert np.abs(freq - 1 / 6).max() < 0.015
    mixed_n = np.where(np.arange(len(keys)) % 2 == 0, 9, 40)
    part = _shuffle_prefix(keys, np.arange(len(keys)), mixed_n, 5)
    assert all(len(set(r)) == 5 for r in part.tolist())
    assert (part.max(axis=1) < mixed_n).all()


def test_coverage_of_classes_labels_and_images():
    split = make_split(num_classes=10, per_class=12)
    s = EpisodeSampler(split, n_way=5, k_shot=1, q_query=2, seed=4)
    episodes = s.sample_episodes(4000)
    classes = np.stack([e.classes for e in episodes])
    per_class = np.bincount(classes.ravel(), minlength=10)
    assert np.abs(per_class - 2000).max() < 150  # each class in half of the episodes; ~6 sigma bound
    per_label_slot = np.stack([np.bincount(classes[:, i], minlength=10) for i in range(5)])
    assert np.abs(per_label_slot - 400).max() < 100  # a class is equally likely to get any label
    used = np.concatenate([np.concatenate([e.support.ravel(), e.query.ravel()]) for e in episodes])
    per_image = np.bincount(used, minlength=len(split))
    assert per_image.min() > 0
    assert np.abs(per_image - per_image.mean()).max() < 0.35 * per_image.mean()


def test_fixed_episodes_are_deterministic():
    split = make_split()
    a = EpisodeSampler(split, 5, 1, 5, seed=0)
    b = EpisodeSampler(split, 5, 1, 5, seed=99, storage="device", normalize="dataset")
    state = a.state_dict()
    ea, eb = a.fixed_episodes(50, seed=7), b.fixed_episodes(50, seed=7)
    assert ea == eb and ea == a.fixed_episodes(50, seed=7)
    assert episodes_fingerprint(ea) == episodes_fingerprint(eb)
    other = a.fixed_episodes(50, seed=8)
    assert ea != other and episodes_fingerprint(ea) != episodes_fingerprint(other)
    assert a.fixed_episodes(20, seed=7) == ea[:20]  # prefix of a longer list
    assert a.state_dict() == state  # evaluation does not move the training stream
    five_shot = EpisodeSampler(split, 5, 5, 5).fixed_episodes(50, seed=7)
    assert episodes_fingerprint(five_shot) != episodes_fingerprint(ea)
    assert ea[0].support.shape == (5, 1) and ea[0].query.shape == (5, 5)
    with pytest.raises(ValueError):
        ea[0].support[0, 0] = 1  # the fixed list is read-only


def test_fixed_episodes_same_on_every_machine():
    # Regression pin: the list depends only on (seed, N, K, Q, labels) via the PCG64 raw stream and
    # integer arithmetic; if this changes, published evaluation episodes would silently change.
    labels = np.arange(200) % 8
    split = ImageSplit(np.zeros((200, 2, 2, 1), np.uint8), labels, [str(c) for c in range(8)])
    episodes = EpisodeSampler(split, 5, 1, 3).fixed_episodes(10, seed=0)
    assert episodes[0].classes.tolist() == [0, 4, 2, 6, 3]
    assert episodes[0].support.ravel().tolist() == [16, 100, 122, 126, 123]
    assert episodes[0].query.tolist() == [[152, 80, 176], [84, 68, 172], [146, 98, 178], [78, 14, 198], [27, 99, 91]]
    assert episodes_fingerprint(episodes) == "92366a5e93662f9ef780aba0b6d62073f44cfce5a79f2a7150bed1a8cff36977"


def test_batch_and_iter_fixed_match():
    s = EpisodeSampler(make_split(), 5, 2, 3)
    episodes = s.fixed_episodes(7, seed=1)
    whole = s.batch(episodes)
    parts = list(s.iter_fixed(7, seed=1, batch_size=3))
    assert [p.num_tasks for p in parts] == [3, 3, 1]
    assert torch.equal(torch.cat([p.query_x for p in parts]), whole.query_x)
    assert torch.equal(torch.cat([p.classes for p in parts]), whole.classes)
    assert np.array_equal(decode(whole.support_x[2]), episodes[2].support.ravel())


def test_grouping_into_meta_batches_does_not_change_episodes():
    split = make_split()
    a, b = EpisodeSampler(split, 5, 1, 2, seed=11), EpisodeSampler(split, 5, 1, 2, seed=11)
    assert a.sample_episodes(8) == b.sample_episodes(3) + b.sample_episodes(5)


def test_resume_from_state_dict(tmp_path):
    split = make_split()
    a = EpisodeSampler(split, 5, 2, 3, seed=5)
    for _ in range(3):
        a.sample(2)
    path = tmp_path / "state.json"
    path.write_text(json.dumps(a.state_dict()))
    expected = [a.sample(2) for _ in range(2)]
    b = EpisodeSampler(split, 5, 2, 3, seed=123)
    b.load_state_dict(json.loads(path.read_text()))
    for want in expected:
        got = b.sample(2)
        assert torch.equal(got.support_x, want.support_x) and torch.equal(got.classes, want.classes)
    with pytest.raises(ConfigError, match="k_shot"):
        EpisodeSampler(split, 5, 1, 3).load_state_dict(a.state_dict())
    with pytest.raises(ConfigError, match="bit_generator"):
        EpisodeSampler(split, 5, 2, 3).load_state_dict({"version": 1})


def test_normalisation_tuple_and_dataset():
    split = make_split(channels=3)
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)
    plain = EpisodeSampler(split, 5, 2, 2, seed=6)
    norm = EpisodeSampler(split, 5, 2, 2, seed=6, normalize=(mean, std))
    x0, x1 = plain.sample(3).support_x, norm.sample(3).support_x
    m, sd = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(x1, (x0 - m) / sd, atol=1e-5)
    assert np.array_equal(decode(x1, mean[0], std[0]), decode(x0))

    ds = EpisodeSampler(split, 5, 2, 2, normalize="dataset")
    pixels = split.images.reshape(-1, 3).astype(np.float64) / 255.0
    assert np.allclose(ds.mean, pixels.mean(axis=0), atol=1e-12)
    assert np.allclose(ds.std, pixels.std(axis=0), atol=1e-12)
    assert ds.summary()["normalize"]["mean"] == list(ds.mean)
    gray = make_split(channels=1)
    g = EpisodeSampler(gray, 5, 2, 2, normalize=(0.5, 0.25))
    assert g.mean == (0.5,) and g.sample(1).support_x.shape[2] == 1
    with pytest.raises(ConfigError, match="normalize"):
        EpisodeSampler(split, 5, 2, 2, normalize=((0.5, 0.5), (0.2, 0.2)))  # 2 values for 3 channels
    with pytest.raises(ConfigError, match="0, 1"):
        EpisodeSampler(split, 5, 2, 2, normalize=((125.3, 123.0, 114.0), (63.0, 62.1, 66.7)))
    with pytest.raises(ConfigError, match="normalize"):
        EpisodeSampler(split, 5, 2, 2, normalize="imagenet")


def test_channel_stats_subsample_is_deterministic():
    split = make_split(num_classes=20, per_class=50)
    a = channel_stats(split, max_images=300)
    assert a == channel_stats(split, max_images=300)
    full = channel_stats(split, max_images=10_000)
    assert np.allclose(a[0], full[0], atol=0.02) and a != full


def test_device_storage_and_dtype_options():
    split = make_split()
    host = EpisodeSampler(split, 5, 2, 3, seed=9)
    dev = EpisodeSampler(split, 5, 2, 3, seed=9, storage="device")
    bh, bd = host.sample(3), dev.sample(3)
    assert torch.equal(bh.support_x, bd.support_x) and torch.equal(bh.query_x, bd.query_x)
    half = EpisodeSampler(split, 5, 2, 3, seed=9, dtype=torch.float16).sample(3)
    assert half.query_x.dtype == torch.float16 and torch.allclose(half.query_x.float(), bh.query_x, atol=1e-3)
    with pytest.raises(ConfigError, match="dtype"):
        EpisodeSampler(split, 5, 2, 3, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="storage"):
        EpisodeSampler(split, 5, 2, 3, storage="gpu")


def test_memory_mapped_split(tmp_path, recwarn):
    split = make_split()
    np.save(tmp_path / "images.npy", split.images)
    mm = np.load(tmp_path / "images.npy", mmap_mode="r")
    mapped = ImageSplit(mm, split.labels, split.class_names, name="toy/mm")
    want = EpisodeSampler(split, 5, 2, 3, seed=1).sample(2)
    for storage in ("host", "device"):
        got = EpisodeSampler(mapped, 5, 2, 3, seed=1, storage=storage).sample(2)
        assert torch.equal(got.support_x, want.support_x)
    assert not [w for w in recwarn if "writable" in str(w.message)]
    ds = EpisodeDataset(mm, None)
    blob = pickle.dumps(ds)
    assert len(blob) < 2000  # reopened by file name in workers, not copied
    episodes = EpisodeSampler(split, 5, 2, 3).fixed_episodes(2)
    assert torch.equal(pickle.loads(blob)[episodes].support, ds[episodes].support)


@pytest.mark.parametrize("convert_in_workers", [True, False])
def test_dataloader_with_workers_matches_direct_sampling(convert_in_workers):
    split = make_split()
    direct = EpisodeSampler(split, 5, 2, 3, seed=21)
    expected = [direct.sample(3) for _ in range(4)]
    global_rng = torch.get_rng_state()
    loader = EpisodeLoader(EpisodeSampler(split, 5, 2, 3, seed=21), num_tasks=3, num_batches=4, num_workers=2,
                           convert_in_workers=convert_in_workers)
    got = list(loader)
    assert torch.equal(torch.get_rng_state(), global_rng)
    assert len(got) == len(loader) == 4
    for g, w in zip(got, expected):
        for name in ("support_x", "support_y", "query_x", "query_y", "classes"):
            assert torch.equal(getattr(g, name), getattr(w, name)), name
    assert loader.state_dict() == direct.state_dict()


def test_dataloader_fixed_episodes_and_early_stop_resume():
    split = make_split()
    sampler = EpisodeSampler(split, 5, 1, 2, seed=8)
    episodes = sampler.fixed_episodes(5, seed=3)
    fixed = list(EpisodeLoader(sampler, num_tasks=2, episodes=episodes, num_workers=2))
    assert torch.equal(torch.cat([b.classes for b in fixed]), sampler.batch(episodes).classes)

    reference = EpisodeSampler(split, 5, 1, 2, seed=8)
    expected = [reference.sample(2) for _ in range(6)]
    loader = EpisodeLoader(EpisodeSampler(split, 5, 1, 2, seed=8), num_tasks=2, num_batches=6, num_workers=2)
    first = []
    for b in loader:
        first.append(b)
        if len(first) == 2:
            break  # workers had prefetched more than two batches
    saved = loader.state_dict()
    resumed_sampler = EpisodeSampler(split, 5, 1, 2, seed=0)
    resumed_sampler.load_state_dict(saved)
    resumed = list(EpisodeLoader(resumed_sampler, num_tasks=2, num_batches=4, num_workers=2))
    again = list(loader)  # iterating the same loader again continues where consumption stopped
    for got, want in zip(first + resumed, expected):
        assert torch.equal(got.query_x, want.query_x)
    for got, want in zip(again, expected[2:]):
        assert torch.equal(got.classes, want.classes)


def test_index_sampler_alone():
    s = EpisodeSampler(make_split(), 5, 1, 1, seed=2)
    batches = list(EpisodeIndexSampler(s, num_tasks=3, num_batches=2))
    assert [len(b) for b in batches] == [3, 3] and all(isinstance(e, Episode) for e in batches[0])
    with pytest.raises(ConfigError):
        EpisodeIndexSampler(s, num_tasks=1, num_batches=2, episodes=batches[0])


@pytest.mark.parametrize("key,kwargs", [
    ("n_way", dict(n_way=0)), ("k_shot", dict(k_shot=0)), ("q_query", dict(q_query=0)),
    ("n_way", dict(n_way=2.5)), ("k_shot", dict(k_shot=True)), ("seed", dict(seed=-1)),
])
def test_invalid_counts_name_the_key(key, kwargs):
    args = dict(n_way=5, k_shot=1, q_query=1) | kwargs
    with pytest.raises(ConfigError, match=key):
        EpisodeSampler(make_split(), **args)


def test_too_few_classes():
    with pytest.raises(DataError, match=r"toy/train.*20-way.*has 10 classes"):
        EpisodeSampler(make_split(), n_way=20, k_shot=1, q_query=1)


def test_small_class_is_named_with_its_count():
    split = make_split(num_classes=8, per_class=[20, 20, 6, 20, 20, 20, 3, 20])
    with pytest.raises(DataError) as err:
        EpisodeSampler(split, n_way=5, k_shot=5, q_query=10)
    msg = str(err.value)
    for part in ("toy/train", "/data/toy/train.pkl", "'class02' has 6", "'class06' has 3", "15 images",
                 "skip_small_classes"):
        assert part in msg, part
    s = EpisodeSampler(split, n_way=5, k_shot=5, q_query=10, skip_small_classes=True)
    assert s.skipped == {"class02": 6, "class06": 3} and s.summary()["classes_used"] == 6
    seen = np.unique(np.stack([e.classes for e in s.sample_episodes(300)]))
    assert seen.tolist() == [0, 1, 3, 4, 5, 7]
    with pytest.raises(DataError, match=r"only 6 of its 8 classes"):
        EpisodeSampler(split, n_way=7, k_shot=5, q_query=10, skip_small_classes=True)


def test_foreign_episodes_rejected():
    small = EpisodeSampler(make_split(num_classes=5, per_class=4), 5, 1, 1)
    big = EpisodeSampler(make_split(num_classes=10, per_class=30), 5, 1, 1)
    with pytest.raises(DataError, match="another split"):
        small.batch(big.fixed_episodes(20))
    with pytest.raises(DataError, match="1-shot"):
        big.batch(big.fixed_episodes(1) + EpisodeSampler(make_split(), 5, 2, 1).fixed_episodes(1))


def test_image_converter_layout():
    x = torch.randint(0, 256, (2, 3, 5, 7, 3), dtype=torch.uint8)
    out = ImageConverter()(x)
    assert out.shape == (2, 3, 3, 5, 7) and out.is_contiguous()
    assert torch.equal(out, x.permute(0, 1, 4, 2, 3).float() / 255.0)


def test_image_converter_torch_path_matches_numpy_path():
    # bfloat16 has no numpy dtype, so it takes the torch path that CUDA tensors also take.
    x = torch.randint(0, 256, (2, 4, 5, 5, 3), dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    for m, s in ((None, None), (mean, std)):
        ref = ImageConverter(torch.float32, m, s)(x)
        bf = ImageConverter(torch.bfloat16, m, s)(x)
        assert bf.dtype == torch.bfloat16 and bf.is_contiguous()
        assert torch.allclose(bf.float(), ref, atol=0.02, rtol=0.01)
    ref = ImageConverter(torch.float64, mean, std)(x)
    expect = (x.permute(0, 1, 4, 2, 3).double() / 255 - torch.tensor(mean, dtype=torch.float64).view(3, 1, 1)) \
        / torch.tensor(std, dtype=torch.float64).view(3, 1, 1)
    assert torch.allclose(ref, expect, atol=1e-12)
