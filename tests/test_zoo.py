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


def test_paper_3s_models_have_their_zoo_names():
    """One name per model: ``qatcore.bnn.models.MODELS`` (what bnn-memory, bnn-train and notebook 05
    offer) is exactly the zoo's entries that point into ``qatcore.bnn.models``, under the same names."""
    from qatcore.bnn.models import MODELS

    in_bnn = {name for name, spec in zoo.MODELS.items() if spec.startswith("qatcore.bnn.models:")}
    assert set(MODELS) == in_bnn
    for name, cls in MODELS.items():
        assert zoo.factory(name) is cls, name


def test_the_command_line_offers_the_zoo_names():
    from qatcore.cli import build_parser

    parser = build_parser("*")
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    for command in ("bnn-memory", "bnn-train"):
        model = next(a for a in subcommands[command]._actions if a.dest == "model")
        assert set(model.choices) <= set(zoo.names()) and model.default in zoo.names(), command


def test_load_takes_a_zoo_name_or_a_factory_string():
    model, shape = zoo.load("resnet18")
    assert isinstance(model, nn.Module) and shape == zoo.input_shape("resnet18", model)
    model, shape = zoo.load("qatcore.bnn.models:CNV")
    assert type(model).__name__ == "CNV" and shape == tuple(model.input_shape)
    with pytest.raises(ValueError, match="cannot import 'nope'"):
        zoo.load("qatcore.bnn.models:nope")
