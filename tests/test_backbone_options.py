"""Backbone options go through the one declared mechanism (``metakd.validate.Opt`` / ``resolve``), as learner
options do: one message shape naming the option, its value, the backbone and what is valid."""
from __future__ import annotations

import pytest

from metakd.errors import ConfigError
from metakd.models import build_backbone
from metakd.models.conv4 import OPTIONS as CONV4
from metakd.models.resnet12 import OPTIONS as RESNET12
from metakd.validate import Opt


@pytest.mark.parametrize("name,options,message", [
    ("conv4", {"hidden": 0}, "option hidden=0 of backbone 'conv4' must be an integer >= 1"),
    ("conv4", {"bn": "batch"}, "option bn='batch' of backbone 'conv4' must be one of transductive, running"),
    ("conv4", {"width": 8}, "unknown option(s) 'width' for backbone 'conv4'; valid options: bn, hidden"),
    ("resnet12", {"drop_rate": 1.5}, "option drop_rate=1.5 of backbone 'resnet12' must be a number in [0, 1)"),
    ("resnet12", {"drop_rate": "x"}, "option drop_rate='x' of backbone 'resnet12' must be a number in [0, 1)"),
    ("resnet12", {"widths": [64, 0]},
     "option widths=[64, 0] of backbone 'resnet12' must be a non-empty list of positive integers"),
    ("resnet12", {"avg_pool": 1}, "option avg_pool=1 of backbone 'resnet12' must be true or false"),
    ("resnet12", {"dropblock_size": 0}, "option dropblock_size=0 of backbone 'resnet12' must be an integer >= 1"),
    ("wrn_16_2", {"bn": "none"}, "option bn='none' of backbone 'wrn_16_2' must be one of transductive, running"),
])
def test_backbone_option_errors_have_the_declared_form(name, options, message):
    with pytest.raises(ConfigError) as err:
        build_backbone(name, 5, image_size=32, **options)
    assert str(err.value) == message


def test_backbone_options_are_declared_with_their_defaults():
    assert all(isinstance(spec, Opt) for spec in {**CONV4, **RESNET12}.values())
    model = build_backbone("resnet12", 5, image_size=32, widths=[4, 6], drop_rate=0.1, dropblock=True)
    assert model.feature_dim == 6 and model.head.out_features == 5
    assert build_backbone("conv4", 5, image_size=32).features[0].out_channels == CONV4["hidden"].default
