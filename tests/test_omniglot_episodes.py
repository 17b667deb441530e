"""The official one-shot runs and episode-list files: reading, labels, item ids, errors, and proof that
every evaluation image goes through the same preprocessing function as the background images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import _omniglot_fixtures as ofx
from metakd.data import EpisodeSampler, load_split
from metakd.data import strokes
from metakd.data.fixed_episodes import load_episode_list, omniglot_runs, scan_runs
from metakd.errors import DataError

PRE = strokes.StrokePreprocess(image_size=16)


@pytest.fixture()
def runs_zip(tmp_path):
    members = ofx.runs_members(runs=2, way=3)
    return ofx.write_zip(tmp_path / "all_runs.zip", members), members


def test_runs_from_zip_and_folder(runs_zip, tmp_path):
    path, members = runs_zip
    folder = tmp_path / "unzipped"
    ofx.write_tree(folder, members)
    for source in (path, tmp_path, folder):  # the zip, a ROOT holding it, the runNN/ folders
        eps = omniglot_runs(source, PRE)
        assert [e.episode_id for e in eps] == ["run01", "run02"]
        e = eps[1]
        assert e.batch.support_x.shape == (1, 3, 1, 16, 16) and e.batch.query_x.shape == (1, 3, 1, 16, 16)
        assert (e.batch.n_way, e.batch.k_shot, e.batch.q_query) == (3, 1, 1)
        assert e.support_ids == [f"run02/training/class{k:02d}.png" for k in (1, 2, 3)]
        assert e.query_ids == [f"run02/test/item{m:02d}.png" for m in (1, 2, 3)]
        assert e.batch.query_y.tolist() == [[(m * 2) % 3 for m in (1, 2, 3)]]  # from class_labels.txt
        assert e.batch.support_y.tolist() == [[0, 1, 2]]
    z, f = omniglot_runs(path, PRE), omniglot_runs(folder, PRE)
    assert all(torch.equal(a.batch.query_x, b.batch.query_x) for a, b in zip(z, f))


def test_runs_and_background_images_share_one_preprocessing(runs_zip, tmp_path, monkeypatch):
    """Spy on strokes.stroke_image: the background split, the runs and an episode list all call it, and
    each image equals it applied to the file's bytes (then the sampler's own conversion)."""
    path, members = runs_zip
    ofx.write_sets(tmp_path, sets=("images_background_small1",))
    calls = []
    real = strokes.stroke_image

    def spy(source, size, channels=1, source_polarity=strokes.BLACK_ON_WHITE, where=""):
        calls.append(where)
        return real(source, size, channels, source_polarity, where)

    monkeypatch.setattr(strokes, "stroke_image", spy)
    train = load_split("omniglot", str(tmp_path), "train", image_size=16, val_alphabets=[])
    n_train = len(calls)
    assert n_train == len(train) and all("images_background_small1" in w for w in calls)
    eps = omniglot_runs(path, PRE)
    assert len(calls) - n_train == 2 * 6 and all("all_runs.zip:run" in w for w in calls[n_train:])
    raw = members["run01/test/item02.png"]
    assert torch.equal(eps[0].batch.query_x[0, 1], PRE.tensor(real(raw, 16)[None])[0])
    first = ofx.set_members("images_background_small1", ("Balinese",))[
        "images_background_small1/Balinese/character01/0001_01.png"]
    assert np.array_equal(train.images[0], real(first, 16, 1))
    # training batches are converted by the same ImageConverter arithmetic as the runs
    sampler = EpisodeSampler(train, n_way=2, k_shot=1, q_query=1)
    batch = sampler.batch(sampler.fixed_episodes(1))
    row = int(sampler.fixed_episodes(1)[0].support[0, 0])
    assert torch.equal(batch.support_x[0, 0], PRE.tensor(np.asarray(train.images[row])[None])[0])


def test_runs_normalisation_matches_the_sampler(runs_zip, tmp_path):
    path, _ = runs_zip
    pre = strokes.StrokePreprocess(16, mean=(0.1,), std=(0.3,))
    e = omniglot_runs(path, pre)[0]
    plain = omniglot_runs(path, PRE)[0]
    assert torch.allclose(e.batch.support_x, (plain.batch.support_x - 0.1) / 0.3, atol=1e-5)
    assert e.batch.mean == (0.1,) and e.batch.std == (0.3,)


@pytest.mark.parametrize("text, match", [
    ("run01/test/item01.png\n", r"all_runs\.zip:run01/class_labels\.txt line 1: expected two paths"),
    ("run01/test/item01.png run01/training/class01.png\nrun01/test/item09.png run01/training/class01.png\n",
     r"class_labels\.txt line 2: 'run01/test/item09\.png' is not an image in run01/test/"),
    ("run01/test/item01.png run01/training/class07.png\n", r"line 1: 'run01/training/class07\.png' is not an image"),
    ("run01/test/item01.png run01/training/class01.png\nrun01/test/item01.png run01/training/class02.png\n",
     "line 2: 'run01/test/item01.png' is labelled twice"),
    ("run01/test/item01.png run01/training/class01.png\n", r"class_labels\.txt: no label for run01/test/item02\.png"),
])
def test_corrupt_class_labels_name_file_and_line(tmp_path, text, match):
    members = ofx.runs_members(runs=1, way=3)
    members["run01/class_labels.txt"] = text.encode()
    path = ofx.write_zip(tmp_path / "all_runs.zip", members)
    with pytest.raises(DataError, match=match) as err:
        omniglot_runs(path, PRE)
    assert "\n" not in str(err.value)


def test_runs_missing(tmp_path):
    with pytest.raises(DataError, match="no one-shot runs"):
        omniglot_runs(tmp_path, PRE)
    members = ofx.runs_members(runs=1, way=2)
    del members["run01/class_labels.txt"]
    with pytest.raises(DataError, match="run01 has no class_labels.txt"):
        scan_runs(ofx.write_zip(tmp_path / "all_runs.zip", members))


def _write_images(folder, names):
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(ofx.png(rng, 30))


def test_episode_list_file(tmp_path):
    _write_images(tmp_path / "imgs", ["a1.png", "a2.png", "b1.png", "b2.png", "c1.png", "q1.png", "q2.png"])
    (tmp_path / "eps.csv").write_text(
        "episode,role,path,label,id\n"
        "# a comment,,,,\n"
        "e1,support,imgs/b1.png,beta,\n"
        "e1,support,imgs/a1.png,alpha,\n"
        "e1,support,imgs/b2.png,beta,\n"
        "e1,query,imgs/q1.png,alpha,item-1\n"
        "e1,query,imgs/q2.png,beta,item-2\n"
        "e2,support,imgs/a2.png,x,\n"
        "e2,support,imgs/c1.png,y,\n"
        "e2,query,imgs/q1.png,y,\n")
    eps = load_episode_list(tmp_path / "eps.csv", PRE)
    assert [e.episode_id for e in eps] == ["e1", "e2"]
    e1 = eps[0]
    assert e1.class_names == ["beta", "alpha"] and e1.batch.support_y.tolist() == [[0, 1, 0]]
    assert e1.batch.query_y.tolist() == [[1, 0]] and e1.query_ids == ["item-1", "item-2"]
    assert e1.support_ids == ["imgs/b1.png", "imgs/a1.png", "imgs/b2.png"]
    assert (e1.batch.n_way, e1.batch.k_shot, e1.batch.q_query) == (2, 1, 1)
    expected = PRE.tensor(strokes.stroke_image(tmp_path / "imgs" / "q1.png", 16)[None])[0]
    assert torch.equal(e1.batch.query_x[0, 0], expected) and torch.equal(eps[1].batch.query_x[0, 0], expected)


@pytest.mark.parametrize("body, match", [
    ("episode,role,path\n", "line 1: the header must name the columns episode, role, path, label"),
    ("episode,role,path,label\ne1,train,a.png,x\n", "line 2: role must be support or query, got 'train'"),
    ("episode,role,path,label\ne1,support,a.png,x\ne1,query,a.png,z\n", "line 3: query label 'z' of episode 'e1' has no"),
    ("episode,role,path,label\ne1,support,a.png,x\n", "episode 'e1' needs support and query rows"),
    ("episode,role,path,label\ne1,support,,x\n", "line 2: empty path"),
    ("episode,role,path,label\ne1,support,missing.png,x\ne1,query,a.png,x\n", "line 2: .*missing.png.*not found"),
])
def test_episode_list_errors(tmp_path, body, match):
    _write_images(tmp_path, ["a.png"])
    (tmp_path / "eps.csv").write_text(body)
    with pytest.raises(DataError, match=match) as err:
        load_episode_list(tmp_path / "eps.csv", PRE)
    assert "eps.csv" in str(err.value) and "\n" not in str(err.value)
