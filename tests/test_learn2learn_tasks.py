"""learn2learn TaskDatasets as metakd episode sources (with the learn2learn the test command installs)."""
import pytest
import torch

from metakd.data.learn2learn_tasks import TaskDatasetEpisodes, episodes_from_tasksets
from metakd.errors import ConfigError, DataError

l2l = pytest.importorskip("learn2learn")
from learn2learn.data.transforms import KShots, LoadData, NWays, RemapLabels  # noqa: E402


def _taskset(ways=5, samples=4, classes=10, per_class=6, remap=True):
    x = torch.arange(classes).repeat_interleave(per_class).float().view(-1, 1, 1, 1).expand(-1, 1, 16, 16).clone()
    x += torch.rand_like(x) * 0.1  # image value encodes its dataset class
    y = torch.arange(classes).repeat_interleave(per_class)
    ds = l2l.data.MetaDataset(torch.utils.data.TensorDataset(x, y))
    tf = [NWays(ds, ways), KShots(ds, samples), LoadData(ds)] + ([RemapLabels(ds)] if remap else [])
    return l2l.data.TaskDataset(ds, task_transforms=tf, num_tasks=-1)


@pytest.mark.parametrize("remap", [True, False])
def test_tasks_split_into_consistent_support_and_query(remap):
    torch.manual_seed(0)
    src = TaskDatasetEpisodes(_taskset(remap=remap), k_shot=1)
    b = src.sample(3)
    assert b.support_x.shape == (3, 5, 1, 16, 16) and b.query_x.shape == (3, 15, 1, 16, 16)
    assert (b.n_way, b.k_shot, b.q_query) == (5, 1, 3)
    for t in range(3):
        s_cls = b.support_x[t, :, 0, 0, 0].floor()
        q_cls = b.query_x[t, :, 0, 0, 0].floor()
        # one dataset class per episode label, the same in support and query
        for label in range(5):
            assert s_cls[b.support_y[t] == label].unique().numel() == 1
            assert torch.equal(q_cls[b.query_y[t] == label].unique(), s_cls[b.support_y[t] == label].unique())
        assert s_cls.unique().numel() == 5


def test_a_metakd_learner_trains_on_learn2learn_tasks():
    from metakd.learners import build_learner
    from metakd.models import build_backbone

    torch.manual_seed(0)
    episodes = TaskDatasetEpisodes(_taskset(), k_shot=1, q_query=3)
    learner = build_learner("maml", build_backbone("conv4", n_way=5, hidden=8, in_channels=1, image_size=16),
                            inner_lr=0.1, train_steps=1, test_steps=1)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    for _ in range(2):
        loss, metrics = learner.meta_loss(episodes.sample(2))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss) and 0 <= metrics["acc"] <= 1
    assert learner.evaluate(episodes.sample(2)).shape == (2,)


def test_bad_tasks_and_tasksets_are_named():
    with pytest.raises(DataError, match="expected a learn2learn TaskDataset"):
        TaskDatasetEpisodes(object(), k_shot=1)
    with pytest.raises(ConfigError, match="k_shot must be >= 1"):
        TaskDatasetEpisodes(_taskset(), k_shot=0)
    with pytest.raises(DataError, match="needs at least 6"):
        TaskDatasetEpisodes(_taskset(samples=4), k_shot=1, q_query=5).sample(1)
    with pytest.raises(DataError, match="'train' field"):
        episodes_from_tasksets(object(), k_shot=1)

    class Sets:
        train = validation = test = _taskset()

    assert set(episodes_from_tasksets(Sets(), k_shot=1)) == {"train", "validation", "test"}


def test_engine_evaluates_learn2learn_tasks():
    from metakd.engine.evaluation.episodes import evaluate_tasks
    from metakd.learners import build_learner
    from metakd.models import build_backbone

    torch.manual_seed(0)
    learner = build_learner("protonet", build_backbone("conv4", n_way=5, hidden=8, in_channels=1, image_size=16))
    res = evaluate_tasks(learner, TaskDatasetEpisodes(_taskset(), k_shot=1), 7, batch_size=3, progress=False)
    assert res["episodes"] == 7 and len(res["per_episode"]) == 7 and 0 <= res["acc"] <= 1
    assert learner.training  # restored


def test_import_learn2learn_drops_only_gyms_notice():
    """A plain ``import learn2learn`` prints gym's notice on stderr; ``import_learn2learn`` does not, and
    other stderr output of the import still gets through."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONWARNINGS": "default"}

    def stderr_of(code):
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stderr

    from metakd.data.learn2learn_tasks import _gym_notice

    notice = _gym_notice()
    plain = stderr_of("import learn2learn")
    if notice:  # the installed gym has a notice for its version: a plain import shows it
        assert notice.strip().splitlines()[0] in plain
    quiet = stderr_of("from metakd.data.learn2learn_tasks import import_learn2learn; "
                      "import sys; l2l = import_learn2learn(); print(l2l.__version__, file=sys.stdout)")
    assert "Gym has been unmaintained" not in quiet and (not notice or notice.strip().splitlines()[0] not in quiet)
    passed_on = stderr_of("import importlib, sys; orig = importlib.import_module\n"
                          "def noisy(name, *a, **k):\n"
                          "    print('other message', file=sys.stderr)\n"
                          "    return orig(name, *a, **k)\n"
                          "importlib.import_module = noisy\n"
                          "from metakd.data.learn2learn_tasks import import_learn2learn; import_learn2learn()")
    assert "other message" in passed_on
