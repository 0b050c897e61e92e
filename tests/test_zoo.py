"""Every model in the zoo builds by name and runs on an input of its documented shape."""

import pytest
from torch import nn

from qatcore import zoo


def test_every_registered_model_builds():
    for name in zoo.names():
        assert isinstance(zoo.build(name), nn.Module), name


def test_an_unknown_model_is_named_in_the_error():
    with pytest.raises(ValueError, match="model must be one of .*'nope'"):
        zoo.build("nope")
