"""A training step's tensors follow its model and batch onto their device: none is made on torch's default one.

No GPU is needed to check it. Under a default device of ``meta`` every factory call that names no device
(``torch.empty``, ``zeros``, ``arange``, ``tensor``…) makes a meta tensor, and mixing one with the CPU's tensors
fails; so a step on the CPU run that way must give the very results it gives under the CPU default. On a GPU the
same code keeps every buffer on the GPU."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qatcore.bnn import streamed
from qatcore.bnn.measure import operator_count, peak_on_gpu
from qatcore.bnn.models import BNNMLP, CNV, BinaryNet, ResNetE18, set_mode
from qatcore.bnn.optim import make_optimizer
from qatcore.bnn.packing import pack_bits, unpack_bits, unpack_signs
from qatcore.bnn.train import training_step

MODELS = {
    "mlp": (lambda: BNNMLP(image_size=8), 24),
    "cnv": (lambda: CNV(), 10),
    "binarynet": (lambda: BinaryNet(image_size=16), 11),
    "resnete18": (lambda: ResNetE18(image_size=64, num_classes=10), 2),
}


def _steps(net, optimizer, x, y, mode, steps=2):
    opt = make_optimizer(net, mode, optimizer=optimizer)
    return [training_step(net, opt, x, y) for _ in range(steps)]


#: every model's layer-by-layer step, and the streamed one of those that have it (not ResNetE-18)
PATHS = [(m, True) for m in MODELS] + [(m, False) for m in MODELS if m != "resnete18"]


@pytest.mark.parametrize("optimizer", ["bnn_adam", "bnn_sgd", "bop"])
@pytest.mark.parametrize(
    ("model", "layered"),
    PATHS,
    ids=[f"{m}-{'layered' if by_layer else 'streamed'}" for m, by_layer in PATHS],
)
def test_a_low_memory_step_makes_its_tensors_where_its_model_is(
    monkeypatch, model, layered, optimizer
):
    # small chunks: several a stage, so that every streamed path runs
    monkeypatch.setattr(streamed, "ROW_VALUES", 2_000)
    build, n = MODELS[model]
    torch.manual_seed(0)
    net = set_mode(build(), "low_memory", "po2").train()
    net.streamed = not layered
    other = copy.deepcopy(net)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand((n, *_input_shape(net)), generator=generator) * 2 - 1
    y = torch.randint(0, 10, (n,), generator=generator)
    expected = _steps(net, optimizer, x, y, "low_memory")
    with torch.device("meta"):
        losses = _steps(other, optimizer, x, y, "low_memory")
    assert losses == expected
    for a, b in zip(net.state_dict().values(), other.state_dict().values(), strict=True):
        assert a.device.type == "cpu" and torch.equal(a, b)


def _input_shape(net):
    return getattr(net, "input_shape", (3, 64, 64))


def test_packed_bits_unpack_on_their_own_device():
    bits = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 1], dtype=torch.bool)
    packed = pack_bits(bits)
    on_meta = packed.to("meta")
    for dtype in (torch.bool, torch.uint8, torch.float32):
        assert unpack_bits(on_meta, bits.shape, dtype).device.type == "meta"
    assert unpack_signs(on_meta, bits.shape).device.type == "meta"
    assert unpack_signs(on_meta, bits.shape, scale=0.5).device.type == "meta"


def test_the_gpu_peak_is_asked_of_a_cuda_device_only():
    with pytest.raises(
        ValueError, match="must be a CUDA device, got cpu; on the CPU use measured_peak"
    ):
        peak_on_gpu("cnv", "low_memory", 4, "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
def test_without_a_gpu_the_gpu_bench_says_so_and_writes_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="no CUDA device is available here"):
        peak_on_gpu("cnv", "low_memory", 4)
    bench = Path(__file__).resolve().parents[1] / "bench" / "bench_bnn_cuda.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--results", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 2 and "no CUDA device here" in done.stderr
    assert not list(tmp_path.iterdir())


def test_the_operator_count_is_what_the_step_dispatches():
    standard = operator_count("cnv", "standard", 4)
    streamed_once = operator_count("cnv", "low_memory", 4)
    # the same step, the same operators
    assert operator_count("cnv", "low_memory", 4) == streamed_once
    assert streamed_once > 2 * standard > 0
    with streamed.budgets(row_values=2_000):  # more chunks: each runs its own operators
        assert operator_count("cnv", "low_memory", 4) > 2 * streamed_once
    with pytest.raises(ValueError, match="model_name"):
        operator_count("vgg", "standard", 4)
    with pytest.raises(ValueError, match="batch_size"):
        operator_count("cnv", "standard", 1)
