"""Checkpoints rebuild the same model by name and never unpickle foreign objects."""

import pytest
import torch

from qatcore import checkpoint, zoo


class _Payload:
    """An object whose unpickling would run code: writes a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_rebuilds_the_same_model(tmp_path):
    model = zoo.build("mnist_cnn", bits=3, image_size=8, estimator="dsq")
    path = checkpoint.save(
        tmp_path / "m.pt",
        model,
        "mnist_cnn",
        {"bits": 3, "image_size": 8, "estimator": model[0].estimator},
        {"dataset": "digits", "epochs": 3},
    )
    saved = checkpoint.load(path)
    assert saved.name == "mnist_cnn" and saved.kwargs == {
        "bits": 3,
        "image_size": 8,
        "estimator": "dsq",
    }
    assert saved.info == {"dataset": "digits", "epochs": 3}
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(saved.model(x), model.eval()(x), rtol=0, atol=0)
    assert saved.model[0].bits == 3 and saved.model[0].estimator.name == "dsq"


def test_a_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    torch.save(
        {
            "format": checkpoint.FORMAT,
            "model": "mnist_cnn",
            "kwargs": {},
            "state_dict": {},
            "info": _Payload(marker),
        },
        tmp_path / "evil.pt",
    )
    with pytest.raises(ValueError, match="not a safe qatcore checkpoint"):
        checkpoint.load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_other_files_and_bad_arguments_are_named(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a qatcore checkpoint"):
        checkpoint.load(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a safe qatcore checkpoint"):
        checkpoint.load(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.load(tmp_path / "missing.pt")
    model = zoo.build("mnist_cnn", image_size=8)
    with pytest.raises(ValueError, match="model must be one of"):
        checkpoint.save(tmp_path / "a.pt", model, "no_such_model")
    with pytest.raises(TypeError, match="kwargs must hold only plain values"):
        checkpoint.save(tmp_path / "a.pt", model, "mnist_cnn", {"image_size": object()})
    with pytest.raises(ValueError, match="folder .* does not exist"):
        checkpoint.save(tmp_path / "no" / "a.pt", model, "mnist_cnn")


def test_an_existing_checkpoint_is_kept_unless_overwritten(tmp_path):
    model = zoo.build("mnist_cnn", image_size=8)
    path = checkpoint.save(tmp_path / "a.pt", model, "mnist_cnn", {"image_size": 8})
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        checkpoint.save(path, zoo.build("mnist_cnn", image_size=8), "mnist_cnn", {"image_size": 8})
    assert path.read_bytes() == before
    checkpoint.save(
        path, zoo.build("mnist_cnn", image_size=8), "mnist_cnn", {"image_size": 8}, overwrite=True
    )
    assert path.read_bytes() != before and sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]
