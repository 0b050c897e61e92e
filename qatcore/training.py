"""The command line's path from a zoo model to a deployable file: train it and save the checkpoint
(``qatcore train``), then export that checkpoint, checked on its test split (``qatcore export``).

It sits above the papers and export, beside the zoo and checkpoints: export itself never trains
and never reads checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qatcore import checkpoint, zoo
from qatcore.checks import check_choice, int_at_least, positive_number
from qatcore.optimizers import PRESETS
from qatcore.runtime import seed_everything

if TYPE_CHECKING:
    from qatcore.export.exporter import ExportResult

#: the models ``qatcore train`` trains, and the paper whose training loop each uses
TRAINABLE = {
    "mnist_cnn": "estimators",
    "pikelpn_mobilenet": "estimators",
    "bnn_mlp": "bnn",
    "cnv": "bnn",
    "binarynet": "bnn",
}
#: the base learning rate of each trainer when ``lr`` is not given: Adam for paper 1's models, the
#: third paper's "bnn_adam" for the BNNs
DEFAULT_LR = {"estimators": 3e-3, "bnn": PRESETS["bnn_adam"].lr}
#: the models with a ``bits`` argument (the BNNs are 1-bit by construction)
WITH_BITS = ("mnist_cnn", "pikelpn_mobilenet")


@dataclass
class Trained:
    """Where the checkpoint went and how the model did on the test split."""

    path: Path
    model: str
    kwargs: dict[str, Any]
    test_accuracy: float
    epochs: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.path),
            "model": self.model,
            "kwargs": self.kwargs,
            "test_accuracy": round(self.test_accuracy, 4),
            "epochs": self.epochs,
        }


def model_kwargs(name: str, bits: int | None, image_size: int, num_classes: int) -> dict[str, Any]:
    """The zoo keyword arguments of ``name`` for one-channel ``image_size`` images."""
    check_choice("model", name, sorted(TRAINABLE))
    if bits is not None and name not in WITH_BITS:
        raise ValueError(f"bits applies only to {WITH_BITS}; {name!r} is binary")
    kwargs: dict[str, Any] = {"image_size": image_size, "num_classes": num_classes}
    if name in ("cnv", "binarynet"):
        kwargs["in_channels"] = 1
    if bits is not None:
        kwargs["bits"] = bits
    return kwargs


def train_checkpoint(
    name: str,
    out: str | Path,
    *,
    bits: int | None = None,
    epochs: int = 3,
    dataset: str = "digits",
    data_dir: str | None = None,
    lr: float | None = None,
    batch_size: int = 64,
    seed: int = 0,
    overwrite: bool = False,
) -> Trained:
    """Train zoo model ``name`` on ``dataset`` and save it to ``out`` with ``qatcore.checkpoint``.

    ``mnist_cnn`` and ``pikelpn_mobilenet`` train with Adam through ``qatcore.estimators.train``;
    the BNNs with the paper's loop (``qatcore.bnn.train``, inputs mapped to [−1, 1], which the
    checkpoint records as ``inputs="signed"``).
    """
    from qatcore import data as datasets

    epochs = int_at_least("epochs", epochs, 1)
    batch_size = int_at_least("batch_size", batch_size, 2)
    if lr is not None:
        positive_number("lr", lr)
    loaded = datasets.load(dataset, data_dir)
    kwargs = model_kwargs(name, bits, loaded.image_size, loaded.num_classes)
    seed_everything(seed)
    model = zoo.build(name, **kwargs)
    info: dict[str, Any] = {"dataset": dataset, "epochs": epochs, "seed": seed}
    if data_dir is not None:
        info["data_dir"] = str(data_dir)
    if TRAINABLE[name] == "bnn":
        from qatcore.bnn.train import BNNConfig, train_bnn

        optimizer = replace(PRESETS["bnn_adam"], lr=lr or DEFAULT_LR["bnn"])
        bnn_config = BNNConfig(epochs=epochs, batch_size=batch_size, seed=seed, optimizer=optimizer)
        accuracy = train_bnn(model, loaded, bnn_config, progress=False).test_accuracy
        info["inputs"] = "signed"
    else:
        from qatcore.estimators.train import TrainConfig, train
        from qatcore.optimizers import OptimizerConfig

        config = TrainConfig(
            OptimizerConfig("adam", lr=lr or DEFAULT_LR["estimators"]),
            batch_size=batch_size,
            epochs=epochs,
            seed=seed,
        )
        accuracy = train(model, loaded, config, progress=False).test_accuracy
        info["inputs"] = "unit"
    info["test_accuracy"] = float(accuracy)
    path = checkpoint.save(out, model.eval(), name, kwargs, info, overwrite=overwrite)
    return Trained(path, name, kwargs, float(accuracy), epochs)


def check_image_size(saved, shape: tuple[int, ...], dataset: str) -> None:
    """ValueError unless images of ``shape`` (C×H×W) are what the checkpoint's model was built for."""
    wanted = getattr(saved.model, "input_shape", None)
    if wanted is None and "image_size" in saved.kwargs:
        wanted = (shape[0], saved.kwargs["image_size"], saved.kwargs["image_size"])
    if wanted is not None and tuple(wanted) != tuple(shape):
        raise ValueError(
            f"the checkpoint's model {saved.name!r} takes images of shape {tuple(wanted)} (C×H×W) but "
            f"the {dataset!r} test images are {tuple(shape)}: export it with the data it was trained on"
        )


def export_checkpoint(
    path: str | Path,
    format: str,
    out: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    overwrite: bool = False,
    threads: int = 1,
    int8: bool = False,
) -> ExportResult:
    """Export a ``qatcore.checkpoint`` file, checking it on the test split of its dataset
    (``int8``: the 8-bit QDQ variant of ``onnx``, see ``qatcore.export.export``).

    The dataset (default: the checkpoint's ``info["dataset"]``, else ``digits``) and the input
    scaling (``info["inputs"]``) come from the checkpoint unless given.
    """
    from qatcore import data as datasets
    from qatcore.export.exporter import check_format, check_installed, export, scaled_inputs

    check_format(format)
    check_installed(format)
    saved = checkpoint.load(path)
    name = dataset or saved.info.get("dataset", "digits")
    data = datasets.load(name, data_dir or saved.info.get("data_dir"))
    check_image_size(saved, tuple(data.x_test.shape[1:]), name)
    x = scaled_inputs(data.x_test, saved.info.get("inputs", "unit"))
    info = {
        "model": saved.name,
        "kwargs": saved.kwargs,
        "checkpoint": Path(path).name,
        "dataset": name,
        "inputs": saved.info.get("inputs", "unit"),
    }
    return export(
        saved.model,
        out,
        format,
        x,
        data.y_test,
        name=Path(path).stem,
        overwrite=overwrite,
        threads=threads,
        info=info,
        int8=int8,
    )
