"""Bit packing in torch: 8 booleans per ``uint8``, most significant bit first (``np.packbits`` order).

The low-memory mode keeps every 1-bit quantity it needs for the backward pass (signs of binary
layer inputs, signs of the normalised batch-norm output, STE and pooling masks) in this form, so a
tensor of ``n`` bits really occupies ``ceil(n / 8)`` bytes while autograd holds it.

Packing reads each group of 8 booleans as one little-endian int64 and gathers its eight 0/1 bytes
into the top byte with one multiplication (bit ``7 − i`` ← byte ``i``); unpacking looks each byte
up in a 256-row table. Both are single passes, which keeps the low-memory mode's time close to the
standard mode's. On the CPU, NumPy does both (``np.packbits`` and a table lookup, on the tensors' own
memory): each is one call that writes its result directly, several times faster than torch's bool
comparisons and gathers, with the same bits.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

_SHIFTS = torch.arange(7, -1, -1, dtype=torch.uint8)  # bit 7 first, like np.packbits
# byte i of a little-endian int64 moves to bit 56 + 7 − i: the sum of 2**(63 − 9i), as a signed int64
_GATHER = 0x8040201008040201 - (1 << 64)
_BITS = ((torch.arange(256).unsqueeze(1) >> _SHIFTS.long()) & 1).bool()  # row b: the 8 bits of b
_SIGNS = _BITS.float() * 2 - 1


def packed_size(numel: int) -> int:
    """Bytes needed for ``numel`` bits: ``ceil(numel / 8)``."""
    return -(-int(numel) // 8)


#: dtypes whose CPU tensors NumPy reads in place
_NUMPY_DTYPES = (
    torch.bool,
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.float16,
    torch.float32,
    torch.float64,
)


def as_numpy(t: torch.Tensor) -> np.ndarray | None:
    """``t``'s values as a NumPy array on its own memory where ``t`` is a CPU tensor NumPy can read, else None:
    the low-memory mode's bit operations run in NumPy there (one call each, with far less overhead per call
    than torch's), and in torch on other devices."""
    if not t.is_cpu or t.dtype not in _NUMPY_DTYPES:
        return None
    return (t.detach() if t.requires_grad else t).numpy()


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Pack a boolean tensor (any shape) into a flat ``uint8`` tensor of ``ceil(numel / 8)`` bytes."""
    if bits.dtype != torch.bool:
        raise TypeError(f"bits must be a bool tensor, got dtype {bits.dtype}")
    values = as_numpy(bits)
    if values is not None:
        return torch.from_numpy(np.packbits(values))
    return _pack_bytes(bits.reshape(-1).view(torch.uint8))


def _pack_bytes(flat: torch.Tensor) -> torch.Tensor:
    """``pack_bits`` of a flat ``uint8`` tensor of zeros and ones."""
    padding = packed_size(flat.numel()) * 8 - flat.numel()
    if padding:
        flat = torch.cat([flat, flat.new_zeros(padding)])
    if sys.byteorder != "little":  # pragma: no cover - the shift-and-add fallback
        return (flat.view(-1, 8) << _SHIFTS).sum(dim=1, dtype=torch.uint8)
    # the product's top byte is the packed byte; the cast to uint8 keeps a value's lowest 8 bits
    return (flat.view(torch.int64) * _GATHER).bitwise_right_shift_(56).to(torch.uint8)


def _check_packed(packed: torch.Tensor, shape) -> int:
    """The number of values of ``shape``, after checking that ``packed`` holds exactly their bits."""
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise TypeError(
            f"packed must be a flat uint8 tensor, got {packed.dtype} {tuple(packed.shape)}"
        )
    numel = 1
    for side in shape:
        numel *= int(side)
    if packed.numel() != packed_size(numel):
        raise ValueError(
            f"packed has {packed.numel()} bytes; shape {tuple(shape)} needs {packed_size(numel)}"
        )
    return numel


def _lookup(
    packed: torch.Tensor, shape, table: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Each byte of ``packed`` replaced by its row of the 256×8 ``table``, cut to ``shape`` (into ``out``)."""
    numel = _check_packed(packed, shape)
    index = as_numpy(packed)
    if out is None:
        if index is not None:  # NumPy's take copies whole table rows
            gathered = np.take(table.numpy(), index, axis=0, mode="clip")
            return torch.from_numpy(gathered.reshape(-1)[:numel].reshape(tuple(shape)))
        return table.index_select(0, packed.int()).view(-1)[:numel].view(shape)
    table = table.to(out.dtype)
    rows = out[: packed.numel() * 8].view(-1, 8)
    if index is not None and (into := as_numpy(rows)) is not None:
        np.take(table.numpy(), index, axis=0, out=into, mode="clip")
        return out[:numel].view(shape)
    if (
        out.dtype == torch.float16
    ):  # gathered as int16 bit patterns, several times faster than as float16
        table, rows = table.view(torch.int16), rows.view(torch.int16)
    torch.index_select(table, 0, packed.int(), out=rows)
    return out[:numel].view(shape)


_TABLES = {torch.bool: _BITS, torch.float32: _BITS.float(), torch.uint8: _BITS.to(torch.uint8)}
_COPIES: dict[tuple[int, torch.device], torch.Tensor] = {}


def _on(table: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One of this module's tables on ``device`` (copied there once, on first use)."""
    if table.device == device:
        return table
    key = (id(table), device)
    if key not in _COPIES:
        _COPIES[key] = table.to(device)
    return _COPIES[key]


def unpack_bits(
    packed: torch.Tensor, shape: torch.Size | tuple[int, ...], dtype: torch.dtype = torch.bool
) -> torch.Tensor:
    """Inverse of ``pack_bits``: the boolean tensor of ``shape`` that was packed into ``packed``, or its
    ones and zeros as float32 or uint8 (``dtype``; a float tensor is multiplied by a uint8 mask faster than by
    a boolean one, and by a float32 one in four times the memory)."""
    if dtype not in _TABLES:
        raise ValueError(f"dtype must be torch.bool, torch.float32 or torch.uint8, got {dtype}")
    if dtype != torch.float32 and (index := as_numpy(packed)) is not None:
        numel = _check_packed(packed, shape)
        bits = np.unpackbits(index, count=numel).reshape(tuple(shape))  # ones and zeros
        return torch.from_numpy(bits.view(np.bool_) if dtype == torch.bool else bits)
    return _lookup(packed, shape, _on(_TABLES[dtype], packed.device))


def pack_signs(x: torch.Tensor) -> torch.Tensor:
    """Packed ``sign(x) = +1`` bits (``x >= 0``, so ``sign(0) = +1``)."""
    values = as_numpy(x)
    if values is not None:
        return torch.from_numpy(np.packbits(np.greater_equal(values, 0)))
    return pack_bits(torch.ge(x, 0))


def pack_within_one(x: torch.Tensor) -> torch.Tensor:
    """Packed ``|x| ≤ 1`` bits (the clipping STE's mask; NaN gives 0)."""
    values = as_numpy(x)
    if values is not None:
        return torch.from_numpy(np.packbits(np.less_equal(np.abs(values), 1)))
    return pack_bits(x.abs() <= 1)


def unpack_signs(
    packed: torch.Tensor, shape, scale: float = 1.0, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The float32 ±1 tensor whose signs ``pack_signs`` stored, or ``±scale`` (one pass: the table is scaled),
    written into the flat ``out`` (float32 or float16, of at least ``8·packed.numel()`` values) when given."""
    table = _on(_SIGNS, packed.device)
    return _lookup(packed, shape, table if scale == 1 else table * scale, out)
