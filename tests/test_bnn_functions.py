"""qatcore.bnn packing and backward passes against their defining formulas (numpy, float64)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from strategies import examples

from qatcore.bnn import functions as fn
from qatcore.bnn import packing
from qatcore.bnn.packing import pack_bits, pack_signs, packed_size, unpack_bits, unpack_signs

shapes = st.lists(st.integers(1, 9), min_size=1, max_size=4)


@examples(60)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1))
def test_packing_round_trips_exactly_and_matches_numpy(shape, seed):
    bits = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) > 0.5
    packed = pack_bits(bits)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_size(bits.numel())
    assert np.array_equal(packed.numpy(), np.packbits(bits.numpy().reshape(-1)))
    assert torch.equal(unpack_bits(packed, bits.shape), bits)


@examples(40)
@given(values=st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=40))
def test_sign_bits_round_trip_to_plus_minus_one(values):
    x = torch.tensor(values, dtype=torch.float32)
    signs = unpack_signs(pack_signs(x), x.shape)
    assert torch.equal(signs, torch.where(x >= 0, 1.0, -1.0))
    assert torch.equal(fn.sign(x), signs)


def _edge_values(n: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 1.5
    for step, value in [(3, 1.0), (4, -1.0), (5, 0.0), (6, -0.0), (7, math.nan), (8, -math.nan)]:
        x[::step] = value
    x[::9], x[::10] = math.inf, -math.inf
    return x


@pytest.mark.parametrize("n", [1, 7, 8, 9, 100, 4099])
def test_numpy_and_torch_packing_give_the_same_bits(n, monkeypatch):
    """On the CPU NumPy packs and unpacks; on other devices torch does: both give the same bits and values,
    NaN, ±0 and ±inf included (``packing.as_numpy`` returning None forces torch's path here)."""
    x = _edge_values(n, n)
    strided = torch.stack([x, -x], 1)[:, 1]  # a view that is not contiguous
    inputs = [x, x.half(), x.double(), strided]
    packed = pack_signs(x)

    def results():
        out = [pack_signs(t) for t in inputs] + [packing.pack_within_one(t) for t in inputs]
        out += [pack_bits(x > 0), unpack_signs(packed, (n, 1)), unpack_signs(packed, (n,), 0.3)]
        out += [
            unpack_bits(packed, (n,), dtype) for dtype in (torch.bool, torch.uint8, torch.float32)
        ]
        for dtype in (torch.float32, torch.float16):
            out.append(
                unpack_signs(
                    packed, (n,), 0.3, torch.full((packed.numel() * 8 + 5,), 7.0, dtype=dtype)
                )
            )
        return out

    on_cpu = results()
    monkeypatch.setattr(packing, "as_numpy", lambda t: None)
    in_torch = results()
    for a, b in zip(on_cpu, in_torch, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    expected = [v >= 0 for v in x.tolist()]  # NaN ≥ 0 is false, −0 ≥ 0 true
    assert unpack_bits(on_cpu[0], (n,)).tolist() == expected
    assert unpack_bits(on_cpu[4], (n,)).tolist() == [abs(v) <= 1 for v in x.tolist()]


def test_packing_rejects_wrong_inputs():
    with pytest.raises(TypeError, match="bits must be a bool tensor"):
        pack_bits(torch.ones(3))
    with pytest.raises(ValueError, match="needs 2"):
        unpack_bits(torch.zeros(1, dtype=torch.uint8), (9,))


def po2_reference(dy: np.ndarray) -> np.ndarray:
    """docs/sources.md: scale by 2^bias, sign·2^clip(round(log2|·|), −8, 7), scale back (zeros stay 0)."""
    dy = dy.astype(np.float64)
    bias = -np.round(np.log2(np.abs(dy).max())) + 8
    with np.errstate(divide="ignore"):
        exponent = np.clip(np.round(np.log2(np.abs(dy) * 2.0**bias)), -8, 7)
    return np.where(dy == 0, 0.0, np.sign(dy) * 2.0 ** (exponent - bias))


@examples(80)
@given(
    values=st.lists(st.floats(-1e3, 1e3, width=32), min_size=1, max_size=60),
    scale=st.sampled_from([1e-6, 1e-3, 1.0, 1e3]),
)
def test_po2_quantize_equals_its_formula(values, scale):
    x = torch.tensor(values, dtype=torch.float32) * scale
    if not x.abs().max() > 0:
        assert torch.equal(fn.po2_quantize(x), torch.zeros_like(x))
        return
    expected = po2_reference(x.numpy()).astype(np.float32)
    assert np.array_equal(fn.po2_quantize(x).numpy(), expected)
    # overwriting dy's memory gives the same (signed zeros included: -0.0 stays a zero)
    assert np.array_equal(fn.po2_quantize(x.clone(), overwrite=True).numpy(), expected)


@examples(60)
@given(
    values=st.lists(st.floats(-1e3, 1e3, width=32), min_size=1, max_size=30),
    top=st.sampled_from([1.12e-44, 1e-42, 1e-40, 1.2e-38, 1e37, 1e38, 3.4e38]),
)
def test_po2_quantize_equals_its_formula_for_subnormal_and_huge_maxima(values, top):
    x = torch.tensor(values, dtype=torch.float32)
    x = torch.cat(
        [x / max(float(x.abs().max()), 1.0) * top, torch.tensor([top], dtype=torch.float32)]
    )
    out = fn.po2_quantize(x)
    assert torch.isfinite(out).all()
    assert np.array_equal(out.numpy(), po2_reference(x.numpy()).astype(np.float32))


def test_po2_quantize_of_a_subnormal_maximum_stays_tiny():
    out = fn.po2_quantize(torch.tensor([1.12e-44, -1e-45, 0.0]))
    assert out.abs().max() <= 1.12e-44 and out[0] > 0 and out[1] <= 0 and out[2] == 0


def _grads(function, inputs, dy):
    out = function(*inputs)
    out = out[0] if isinstance(out, tuple) else out
    return torch.autograd.grad(
        out, [t for t in inputs if torch.is_tensor(t) and t.requires_grad], dy
    )


def test_low_memory_dense_backward_equals_its_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 20, generator=g).requires_grad_()
    w = (torch.randn(5, 20, generator=g) * 0.8).half().requires_grad_()
    dy = torch.randn(6, 5, generator=g)
    dx, dw = _grads(
        lambda a, b: fn.LowMemoryBinaryLayer.apply(a, b, fn.DenseOp(), True), (x, w), dy
    )
    q = po2_reference(dy.numpy())
    sx, sw = (
        np.where(x.detach().numpy() >= 0, 1.0, -1.0),
        np.where(w.detach().float().numpy() >= 0, 1.0, -1.0),
    )
    assert np.allclose(dx.numpy(), q @ sw, atol=1e-6)
    expected = (
        np.where(sx.T @ q >= 0, 1.0, -1.0).T
        / math.sqrt(w.numel())
        * (np.abs(w.detach().float().numpy()) <= 1)
    )
    assert dw.dtype == torch.float16
    assert np.array_equal(dw.numpy(), expected.astype(np.float16))


def test_low_memory_first_conv_and_binary_conv_backward_equal_their_formula():
    g = torch.Generator().manual_seed(1)
    op = fn.ConvOp((1, 1), (1, 1))
    for binary_input in (False, True):
        x = torch.randn(2, 3, 6, 6, generator=g).requires_grad_()
        w = (torch.randn(4, 3, 3, 3, generator=g) * 0.8).half().requires_grad_()
        dy = torch.randn(2, 4, 6, 6, generator=g)
        dx, dw = _grads(
            lambda a, b, bi=binary_input: fn.LowMemoryBinaryLayer.apply(a, b, op, bi), (x, w), dy
        )
        q = torch.from_numpy(po2_reference(dy.numpy())).float()
        xb = (fn.sign(x) if binary_input else x).detach().requires_grad_()
        wb = fn.sign(w.detach().float()).requires_grad_()
        ref_dx, ref_dw = torch.autograd.grad(F.conv2d(xb, wb, padding=1), [xb, wb], q)
        assert torch.allclose(dx, ref_dx, atol=1e-5)
        expected = fn.sign(ref_dw) / math.sqrt(w.numel()) * (w.detach().float().abs() <= 1)
        assert torch.equal(dw.float(), expected.half().float())


def test_l1_batch_norm_forward_and_backward_equal_their_formulas():
    g = torch.Generator().manual_seed(2)
    for shape in ((8, 5), (4, 3, 5, 5)):
        x = (torch.randn(shape, generator=g) * 3 + 1).requires_grad_()
        beta = (torch.randn(shape[1], generator=g)).half().requires_grad_()
        dy = torch.randn(shape, generator=g)
        out, mu, sigma = fn.L1BatchNorm.apply(x, beta)
        dx, dbeta = torch.autograd.grad(out, [x, beta], dy)
        axes = (0,) + tuple(range(2, len(shape)))
        view = (1, -1) + (1,) * (len(shape) - 2)
        xn = x.detach().double().numpy()
        mu_ref = xn.mean(axes).astype(np.float16).astype(np.float64)
        sigma_ref = (
            np.abs(xn - mu_ref.reshape(view)).mean(axes).astype(np.float16).astype(np.float64)
        )
        xhat = (xn - mu_ref.reshape(view)) / sigma_ref.reshape(view)
        assert np.allclose(
            out.detach().numpy(), xhat + beta.detach().double().numpy().reshape(view), atol=1e-5
        )
        d = dy.numpy().astype(np.float16).astype(np.float64) / sigma_ref.reshape(view)
        s = np.where(xhat >= 0, 1.0, -1.0)
        mean_abs = np.abs(xhat).mean(axes).astype(np.float16).astype(np.float64).reshape(view)
        expected = (
            d - d.mean(axes, keepdims=True) - s * (s * d).mean(axes, keepdims=True) * mean_abs
        )
        assert np.allclose(dx.numpy(), expected, atol=1e-5)
        assert np.allclose(
            dbeta.float().numpy(), dy.numpy().astype(np.float16).sum(axes), rtol=1e-3, atol=1e-2
        )


def test_l1_batch_norm_refuses_a_gradient_beyond_float16_and_passes_one_already_nan():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).requires_grad_()
    beta = torch.zeros(2).half().requires_grad_()
    out, _, _ = fn.L1BatchNorm.apply(x, beta)
    with pytest.raises(OverflowError, match=r"(?s)float16's 65504.*2 value\(s\) per channel"):
        torch.autograd.grad(out, [x, beta], torch.tensor([[1e5, 0.0], [0.0, 0.0]]))
    out, _, _ = fn.L1BatchNorm.apply(x, beta)  # a NaN from upstream is not this layer's to explain
    dx, _ = torch.autograd.grad(out, [x, beta], torch.tensor([[math.nan, 0.0], [0.0, 0.0]]))
    assert torch.isnan(dx[:, 0]).all()


def test_low_memory_resnete18_at_two_values_per_channel_says_why_rather_than_training_nan():
    from qatcore.bnn.models import ResNetE18, set_mode
    from qatcore.bnn.optim import make_optimizer
    from qatcore.bnn.train import training_step

    torch.manual_seed(0)
    net = set_mode(ResNetE18(image_size=32, num_classes=10), "low_memory", "po2").train()
    optimizer = make_optimizer(net, "low_memory", optimizer="bnn_adam")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand((2, 3, 32, 32), generator=g) * 2 - 1, torch.randint(0, 10, (2,), generator=g)
    with pytest.raises(OverflowError, match="larger batch"):
        training_step(net, optimizer, x, y)


@pytest.mark.parametrize("packed", [False, True])
def test_sign_ste_gradient_is_the_clipped_identity(packed):
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]).requires_grad_()
    out = fn.SignSTE.apply(x, packed)
    assert torch.equal(out, torch.tensor([-1.0, -1, -1, 1, 1, 1, 1]))
    (dx,) = torch.autograd.grad(out, x, torch.arange(1.0, 8.0))
    assert torch.equal(dx, torch.tensor([0.0, 2, 3, 4, 5, 6, 0]))


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 6, 6), (1, 2, 5, 7)])
def test_max_pool_gradient_equals_torch_even_with_ties(packed, shape):
    g = torch.Generator().manual_seed(3)
    for x in (torch.randn(shape, generator=g), fn.sign(torch.randn(shape, generator=g))):
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        out = fn.MaxPool2x2.apply(a, packed)
        ref = F.max_pool2d(b, 2, 2)
        dy = torch.randn(ref.shape, generator=g)
        assert torch.equal(out, ref)
        assert torch.equal(torch.autograd.grad(out, a, dy)[0], torch.autograd.grad(ref, b, dy)[0])


@pytest.mark.parametrize("shape", [(20, 9, 5), (7, 40, 33), (30, 3, 100)])
def test_dense_sign_bits_made_in_blocks_equal_the_whole_product(shape, monkeypatch):
    batch, out_features, in_features = shape
    g = torch.Generator().manual_seed(sum(shape))
    x, dy = (
        fn.sign(torch.randn(batch, in_features, generator=g)),
        torch.randn(batch, out_features, generator=g),
    )
    monkeypatch.setattr(fn, "WEIGHT_BLOCK", 64)  # several blocks of 8 rows, the last one short
    assert torch.equal(
        fn.dense_sign_bits(x, dy, (out_features, in_features)), pack_signs(dy.t() @ x)
    )


@pytest.mark.parametrize("in_numpy", [True, False], ids=["numpy", "torch"])
def test_keep_within_one_through_float16_bits_equals_the_comparison_for_every_float16(
    in_numpy, monkeypatch
):
    if not in_numpy:  # the path of devices other than the CPU
        monkeypatch.setattr(packing, "as_numpy", lambda t: None)
    w = (
        torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.float16)
    )  # all 65536 patterns
    g = torch.full(w.shape, -0.75, dtype=torch.float16)
    expected = torch.where(w.float().abs() <= 1, g.float(), 0.0)  # NaN: |w| ≤ 1 is false
    out = fn.keep_within_one(g.clone(), w, torch.empty(w.shape, dtype=torch.float16))
    assert out.dtype == torch.float16 and torch.equal(out.float(), expected)
    assert torch.equal(fn.keep_within_one(g.clone(), w).float(), expected)  # its own scratch
    assert torch.equal(fn.keep_within_one(g.float(), w), expected)  # the float32 path


@pytest.mark.parametrize("scale", [1.0, 0.125, 3.0])
def test_signs_unpack_into_float16_as_into_float32(scale):
    x = torch.randn(61, generator=torch.Generator().manual_seed(3))
    packed = pack_signs(x)
    half, full = torch.empty(64, dtype=torch.float16), torch.empty(64)
    assert torch.equal(
        unpack_signs(packed, x.shape, scale, half).float(),
        unpack_signs(packed, x.shape, scale, full),
    )
