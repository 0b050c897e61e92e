"""Binary models: packed 1-bit weights, integer thresholds, XNOR-popcount NumPy inference, ONNX Sign."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import examples
from torch import nn

import qatcore
from qatcore import checkpoint, data, zoo
from qatcore.bnn.layers import BinaryLinear, SignActivation
from qatcore.bnn.train import BNNConfig, signed_inputs, train_bnn
from qatcore.cli import main
from qatcore.export import binary, export, graph, onnx_qdq, onnx_run, packed, reference
from qatcore.export.graph import Op


@pytest.fixture(scope="module")
def digits():
    return signed_inputs(data.load("digits"))  # the BNNs see images in [−1, 1]


@pytest.fixture(scope="module", params=["standard", "low_memory"])
def trained_mlp(request):
    """The paper's BNN MLP trained for 3 epochs on 8×8 digits, in either training mode."""
    qatcore.configure(seed=0, threads=1)
    model = zoo.build("bnn_mlp", image_size=8)
    result = train_bnn(
        model, data.load("digits"), BNNConfig(mode=request.param, epochs=3), progress=False
    )
    assert result.test_accuracy > 0.7
    return model.eval()


def _random_statistics(model: nn.Module, seed: int) -> nn.Module:
    """Batch norms with spread-out running statistics, so thresholds differ per channel and sign."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            with torch.no_grad():
                module.running_mean.copy_(torch.randn(n, generator=generator) * 4)
                module.running_var.copy_(torch.rand(n, generator=generator) * 20 + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator))
                if module.weight.requires_grad:  # torch's batch norm: γ of either sign
                    module.weight.copy_(torch.randn(n, generator=generator))
    return model.eval()


@examples(80)
@given(
    n=st.integers(1, 70), rows=st.integers(1, 4), outs=st.integers(1, 4), seed=st.integers(0, 2**16)
)
def test_xnor_popcount_is_the_dot_product_over_valid_positions(n, rows, outs, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.choice([-1, 1], (rows, n)), rng.choice([-1, 1], (outs, n))
    valid = rng.random((rows, n)) < 0.8
    z = reference.xnor_popcount(
        reference.pack_signs(x), np.packbits(valid, axis=-1), reference.pack_signs(w)
    )
    np.testing.assert_array_equal(z, (x * valid) @ w.T)


@examples(80)
@given(
    gamma=st.floats(-3, 3),
    beta=st.floats(-5, 5),
    mean=st.floats(-20, 20),
    var=st.floats(0.01, 50),
    fan_in=st.integers(1, 60),
)
def test_integer_thresholds_give_the_sign_of_the_batch_norm(gamma, beta, mean, var, fan_in):
    bn = Op(
        "batchnorm",
        "bn",
        dict(
            gamma=np.array([gamma]),
            beta=np.array([beta]),
            mean=np.array([mean]),
            var=np.array([var]),
            eps=1e-4,
        ),
    )
    z = np.arange(-fan_in, fan_in + 1)[:, None]
    folded = reference.infer([binary.threshold("t", bn, fan_in)], z.astype(np.int64))
    expected = np.where(gamma / np.sqrt(var + 1e-4) * (z - mean) + beta >= 0, 1, -1)
    np.testing.assert_array_equal(folded, expected)


def test_trained_bnn_mlp_packed_predictions_equal_pytorch_on_every_test_example(
    trained_mlp, digits, tmp_path
):
    result = export(trained_mlp, tmp_path, "packed", digits.x_test, digits.y_test)
    assert result.parity.prediction_agreement == 1.0 and result.parity.examples == len(
        digits.x_test
    )
    assert result.parity.max_abs_diff <= result.parity.output_step
    ops, _ = packed.load(tmp_path / "model.npz")
    kinds = [op.kind for op in ops]  # every BN + sign after a binary-input layer folded
    assert (
        kinds.count("threshold") == 3 and kinds.count("batchnorm") == 2
    )  # first (float input) and last
    with np.load(tmp_path / "model.npz", allow_pickle=False) as stored:
        assert stored["1.weight"].nbytes == 64 * 256 // 8  # 1 bit per weight
    assert result.size_ratio > 15  # measured ≈ 21× on 8×8 inputs (BN parameters stay float)
    meta = json.loads((tmp_path / "model.npz.json").read_text())
    assert set(meta["weight_bits"].values()) == {1} and meta["parity"]["ok"]


@pytest.mark.parametrize("name", ["cnv", "binarynet"])
@pytest.mark.parametrize("mode", ["standard", "low_memory"])
def test_binary_cnns_packed_predictions_equal_pytorch(name, mode, digits, tmp_path):
    qatcore.configure(seed=1, threads=1)
    model = _random_statistics(zoo.build(name, image_size=8, in_channels=1, mode=mode), seed=2)
    x = digits.x_test[:120]
    result = export(model, tmp_path, "packed", x)
    assert result.parity.prediction_agreement == 1.0 and result.parity.within_step
    kinds = [op.kind for op in packed.load(tmp_path / "model.npz")[0]]
    assert kinds.count("threshold") == 7 and kinds.count("batchnorm") == 2  # first and last stay


def test_binary_onnx_uses_sign_and_agrees_with_pytorch(trained_mlp, digits, tmp_path):
    result = export(trained_mlp, tmp_path, "onnx", digits.x_test, digits.y_test)
    assert result.parity.ok
    types = result.metadata["onnx"]["node_types"]
    assert types["Sign"] == 2 * 4 and types["Gemm"] == 5 and types["DequantizeLinear"] == 5


def test_onnx_sign_of_zero_is_plus_one():
    proto = onnx_qdq.build([Op("sign", "s"), Op("flatten", "f")], (1, 1, 3))
    out = onnx_run.run(
        onnx_run.session(proto.SerializeToString()), np.array([[[[-0.5, 0.0, 2.0]]]], np.float32)
    )
    np.testing.assert_array_equal(out, [[-1, 1, 1]])


def test_a_binary_layer_signs_its_input_unless_it_is_already_signed():
    kinds = [op.kind for op in graph.lower(nn.Sequential(nn.Flatten(), BinaryLinear(4, 2)))]
    assert kinds == ["flatten", "sign", "linear"]
    kinds = [
        op.kind
        for op in graph.lower(nn.Sequential(SignActivation(), nn.Flatten(), BinaryLinear(4, 2)))
    ]
    assert kinds == ["sign", "flatten", "linear"]
    kinds = [op.kind for op in graph.lower(zoo.build("bnn_mlp", image_size=8))]
    assert kinds.count("sign") == 4  # the four SignActivations, no second sign before each layer


def test_cli_exports_a_binary_checkpoint(trained_mlp, tmp_path, capsys):
    path = checkpoint.save(
        tmp_path / "bnn.pt",
        trained_mlp,
        "bnn_mlp",
        {"image_size": 8, "mode": trained_mlp.training_mode},
        {"dataset": "digits", "inputs": "signed"},
    )
    assert main(["export", str(path), "--format", "packed", "--out", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (
        summary["prediction_agreement"] == 1.0
        and summary["float_size_bytes"] > 15 * summary["size_bytes"]
    )
