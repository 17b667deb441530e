"""A backbone built for another image size or channel count than the data: a clear error naming both,
in the Python API (first batch) and in the engine (model.options against the data), not torch's
"mat1 and mat2 shapes cannot be multiplied"."""
import pytest
import torch

from metakd.config import load_config
from metakd.data.episode import EpisodeBatch
from metakd.engine.assembly import make_learner
from metakd.errors import ConfigError
from metakd.learners import build_learner
from metakd.models import build_backbone


def batch(c=1, size=84, n=5):
    x = torch.rand(2, n, c, size, size)
    y = torch.arange(n).repeat(2, 1)
    return EpisodeBatch(x, y, x.clone(), y.clone(), n_way=n, k_shot=1, q_query=1)


@pytest.mark.parametrize("name", ["maml", "protonet", "anil"])
def test_python_api_names_image_size_and_channels(name):
    learner = build_learner(name, build_backbone("conv4", n_way=5, hidden=4, in_channels=1, image_size=28),
                            **({"train_steps": 1, "test_steps": 1} if name != "protonet" else {}))
    with pytest.raises(ConfigError, match=r"built for in_channels=1, image_size=28x28, but the episode batch has images "
                                          r"of 1 channel\(s\) at 84x84: build the backbone with in_channels=1, image_size=84"):
        learner.meta_loss(batch())
    with pytest.raises(ConfigError, match="in_channels=3"):
        learner.evaluate(batch(c=3, size=28))
    learner.meta_loss(batch(size=28))  # the right shape trains


def test_resnet12_and_msd_host_are_checked():
    learner = build_learner("msd", build_backbone("resnet12", n_way=5, in_channels=3, image_size=32,
                                                  widths=(4, 4, 4, 4)), host="maml", views=2,
                            train_steps=1, test_steps=1)
    with pytest.raises(ConfigError, match="image_size=32x32, but the episode batch"):
        learner.meta_loss(batch(c=3, size=28))


def test_engine_rejects_model_options_that_contradict_the_data():
    cfg = load_config("maml_glyphs_5w1s", ["model.options.image_size=84"])
    with pytest.raises(ConfigError, match=r"model.options.image_size=84 does not match the data \(image_size 28"):
        make_learner(cfg, 1, 28)
    cfg = load_config("maml_glyphs_5w1s", ["model.options.in_channels=1"])
    assert make_learner(cfg, 1, 28) is not None  # agreeing with the data is fine
