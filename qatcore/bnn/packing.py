"""Bit packing in torch: 8 booleans per ``uint8``, most significant bit first (``np.packbits`` order).

The low-memory mode keeps every 1-bit quantity it needs for the backward pass (signs of binary
layer inputs, signs of the normalised batch-norm output, STE and pooling masks) in this form, so a
tensor of ``n`` bits really occupies ``ceil(n / 8)`` bytes while autograd holds it.

Packing reads each group of 8 booleans as one little-endian int64 and gathers its eight 0/1 bytes
into the top byte with one multiplication (bit ``7 − i`` ← byte ``i``); unpacking looks each byte
up in a 256-row table. Both are single passes, which keeps the low-memory mode's time close to the
standard mode's.
"""

from __future__ import annotations

import sys

import torch

_SHIFTS = torch.arange(7, -1, -1, dtype=torch.uint8)  # bit 7 first, like np.packbits
# byte i of a little-endian int64 moves to bit 56 + 7 − i: the sum of 2**(63 − 9i), as a signed int64
_GATHER = 0x8040201008040201 - (1 << 64)
_BITS = ((torch.arange(256).unsqueeze(1) >> _SHIFTS.long()) & 1).bool()  # row b: the 8 bits of b
_SIGNS = _BITS.float() * 2 - 1


def packed_size(numel: int) -> int:
    """Bytes needed for ``numel`` bits: ``ceil(numel / 8)``."""
    return -(-int(numel) // 8)


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Pack a boolean tensor (any shape) into a flat ``uint8`` tensor of ``ceil(numel / 8)`` bytes."""
    if bits.dtype != torch.bool:
        raise TypeError(f"bits must be a bool tensor, got dtype {bits.dtype}")
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


def _lookup(
    packed: torch.Tensor, shape, table: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
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
    if out is None:
        return table.index_select(0, packed.int()).view(-1)[:numel].view(shape)
    table = table.to(out.dtype)
    rows = out[: packed.numel() * 8].view(-1, 8)
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
    return _lookup(packed, shape, _on(_TABLES[dtype], packed.device))


def pack_signs(x: torch.Tensor) -> torch.Tensor:
    """Packed ``sign(x) = +1`` bits (``x >= 0``, so ``sign(0) = +1``)."""
    return pack_bits(torch.ge(x, 0))


def unpack_signs(
    packed: torch.Tensor, shape, scale: float = 1.0, out: torch.Tensor | None = None
) -> torch.Tensor:
    """The float32 ±1 tensor whose signs ``pack_signs`` stored, or ``±scale`` (one pass: the table is scaled),
    written into the flat ``out`` (float32 or float16, of at least ``8·packed.numel()`` values) when given."""
    table = _on(_SIGNS, packed.device)
    return _lookup(packed, shape, table if scale == 1 else table * scale, out)
