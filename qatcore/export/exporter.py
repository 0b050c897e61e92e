"""``export``: write one deployable file, reload it, check it against PyTorch, then put it in place.

The file is written under a temporary name in the output folder and reloaded from there; only if
its outputs match PyTorch's (``metadata.Parity.ok``) are it and its metadata renamed into place,
as a unit (``files.atomic_write_group``). When parity or anything else fails, the folder is left
as it was (a previous export and its metadata included).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from qatcore import files
from qatcore.checks import check_choice, int_at_least
from qatcore.export import (
    FORMATS,
    binary,
    check_installed,
    graph,
    metadata,
    onnx_inspect,
    onnx_int8,
    onnx_qdq,
    onnx_run,
    packed,
    pt2,
    reference,
)

SUFFIX = {"onnx": ".onnx", "qonnx": ".qonnx.onnx", "packed": ".npz", "pt2": ".pt2"}
#: the 8-bit QDQ variant (``int8=True``): its file suffix, and the share of predictions it must keep
INT8_SUFFIX = ".int8.onnx"
INT8_AGREEMENT = 0.95


class ParityError(ValueError):
    """The exported file does not compute what the PyTorch model computes; nothing was written."""

    def __init__(self, format: str, parity: metadata.Parity, where: str = "") -> None:
        self.parity = parity
        super().__init__(
            f"the {format} export{where} does not match PyTorch: max |Δ| {parity.max_abs_diff:.3g} "
            f"(one output step {parity.output_step:.3g}), prediction agreement "
            f"{parity.prediction_agreement:.4f}; the output folder was left as it was"
        )


@dataclass
class ExportResult:
    """Where the export went, its size against float32, and its parity with PyTorch."""

    format: str
    path: Path
    metadata_path: Path
    size_bytes: int
    float_size_bytes: int | None
    parity: metadata.Parity
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def size_ratio(self) -> float | None:
        """float32 size / export size."""
        return metadata.ratio(self.float_size_bytes, self.size_bytes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON the CLI prints."""
        return metadata.clean(
            {
                "format": self.format,
                "path": str(self.path),
                "metadata": str(self.metadata_path),
                "max_abs_diff": self.parity.max_abs_diff,
                "output_step": self.parity.output_step,
                "prediction_agreement": self.parity.prediction_agreement,
                "parity_ok": self.parity.ok,
                "size_bytes": self.size_bytes,
                "float_size_bytes": self.float_size_bytes,
                "size_ratio": self.size_ratio,
                "accuracy": self.metadata.get("accuracy"),
            }
        )


def check_format(format: str) -> str:
    return check_choice("format", format, FORMATS)


def check_inputs(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.dim() != 4 or len(x) == 0:
        shown = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a non-empty float32 tensor N×C×H×W, got {shown}")
    return x


@torch.no_grad()
def outputs(model, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """``model(x)`` (a module already in eval mode, or any callable) on the CPU in batches, as float64."""
    return np.concatenate(
        [model(x[i : i + batch_size]).double().numpy() for i in range(0, len(x), batch_size)]
    )


def packed_ops(ops: list[graph.Op]) -> list[graph.Op]:
    """The ops in their deployed packed form (binary layers' BN folded into integer thresholds)."""
    return binary.fold_thresholds(ops)


def _reloaded(
    format: str,
    model: nn.Module,
    ops: list[graph.Op] | None,
    x: torch.Tensor,
    tmp: Path,
    threads: int,
    info: dict,
    int8: bool = False,
) -> tuple[np.ndarray, dict]:
    """Write the export to ``tmp``, load it back from disk, run it on ``x``; its outputs and facts."""
    if format in ("onnx", "qonnx"):
        assert ops is not None  # export() lowers the model for every format but pt2
        name = info.get("model") or "qatcore"
        if int8:
            proto, exact = onnx_int8.build(ops, tuple(x.shape[1:]), x.numpy(), name=name)
        else:
            builder = onnx_qdq if format == "onnx" else _qonnx()
            proto = builder.build(ops, tuple(x.shape[1:]), name=name)
        tmp.write_bytes(proto.SerializeToString())
        loaded = onnx.load(str(tmp))
        facts = {
            "node_types": onnx_inspect.node_types(loaded),
            "weight_code_bounds": onnx_inspect.clip_bounds(loaded),
            "activation_bits": onnx_inspect.metadata(loaded, onnx_inspect.ACTIVATION_BITS_KEY),
        }
        if format == "onnx":
            onnx_inspect.check_stored_codes(loaded)
            facts["integer_kernels"] = onnx_run.integer_kernels(tmp, threads)
            if int8:
                facts["int8_exact_weights"] = exact
            return onnx_run.run(onnx_run.session(tmp, threads), x.numpy()), {
                "onnx": {"opset": onnx_qdq.OPSET, "int8": int8, **facts}
            }
        qonnx = _qonnx()
        facts["cleaned_outputs"] = qonnx.execute(qonnx.cleaned(loaded), x.numpy())
        return qonnx.execute(loaded, x.numpy()), {"qonnx": facts}
    if format == "packed":
        assert ops is not None
        tmp.write_bytes(packed.to_bytes(packed_ops(ops), info))
        reloaded, _ = packed.load(tmp)
        return reference.infer(reloaded, x.numpy()), {
            "packed": {"layers": [op.kind for op in reloaded]}
        }
    pt2.save(pt2.export_program(model, x[:2]), tmp)
    return outputs(pt2.load(tmp), x), {}


def _qonnx():
    from qatcore.export import qonnx

    return qonnx


def _checked_writer(
    format: str,
    model: nn.Module,
    ops: list[graph.Op] | None,
    x: torch.Tensor,
    expected: np.ndarray,
    threads: int,
    info: dict,
    found: dict[str, Any],
    int8: bool = False,
):
    """A writer for ``files.atomic_write_group``: it writes the export to its temporary file and
    fails (``ParityError``, so nothing is put in place) unless the reloaded outputs match PyTorch's
    ``expected``; what it found goes into ``found``."""

    def write(tmp: Path) -> None:
        required = INT8_AGREEMENT if int8 else 1.0
        exported, extra = _reloaded(format, model, ops, x, tmp, threads, info, int8)
        result = metadata.parity(expected, exported, required)
        if not result.ok:
            raise ParityError(format, result)
        cleaned = extra.get("qonnx", {}).pop("cleaned_outputs", None)
        if cleaned is not None:  # qonnx's executor again, after its cleanup and shape inference
            after = metadata.parity(expected, cleaned)
            if not after.ok:
                raise ParityError(format, after, " after qonnx's cleanup and shape inference")
            extra["qonnx"]["parity_after_cleanup"] = after.to_dict()
        found.update(exported=exported, parity=result, extra=extra, size=tmp.stat().st_size)

    return write


def export(
    model: nn.Module,
    out: str | Path,
    format: str,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    name: str = "model",
    overwrite: bool = False,
    threads: int = 1,
    info: dict[str, Any] | None = None,
    int8: bool = False,
) -> ExportResult:
    """Export ``model`` as ``out/name.{onnx,npz,pt2}`` with its metadata ``….json`` beside it.

    ``int8=True`` (format ``onnx`` only) writes ``name.int8.onnx``, the 8-bit QDQ variant that
    onnxruntime runs with integer kernels (``qatcore.export.onnx_int8``): its activations are
    calibrated on ``x`` and re-quantized, so it is held to ``INT8_AGREEMENT`` of the predictions,
    not to one output step.

    The file is reloaded from disk and run on ``x`` (labels ``y`` give accuracies); its outputs are
    compared with PyTorch's, and ``ParityError`` leaves the folder as it was if they differ. ``info`` (e.g. the zoo name and keyword arguments) goes into the
    metadata. Existing files raise FileExistsError unless ``overwrite``; nothing half-written is left.
    """
    check_format(format)
    check_installed(format)
    if not isinstance(int8, bool) or (int8 and format != "onnx"):
        raise ValueError(f"int8 must be a bool, and True only with format 'onnx', got {int8!r}")
    x = check_inputs(x)
    int_at_least("threads", threads, 1)
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"name must be a plain file name without folders, got {name!r}")
    folder = files.output_folder(out)
    suffix = INT8_SUFFIX if int8 else SUFFIX[format]
    path, meta_path = folder / f"{name}{suffix}", folder / f"{name}{suffix}.json"
    files.refuse_existing([path, meta_path], overwrite)
    info = dict(info or {})
    model = model.cpu().eval()
    try:
        ops = graph.lower(model)
    except graph.UnsupportedLayerError:
        if format != "pt2":  # torch.export takes any traceable model; only the float size is lost
            raise
        ops = None
    float_size = (
        None
        if ops is None
        else len(onnx_qdq.build(graph.as_float(ops), tuple(x.shape[1:])).SerializeToString())
    )
    expected = outputs(model, x)
    found: dict[str, Any] = {}

    def write_metadata(tmp: Path) -> None:  # runs after the export's writer, with what it found
        found["meta"] = metadata.clean(
            {
                "format": format,
                "file": path.name,
                **info,
                "weight_bits": None if ops is None else graph.weight_bits(ops),
                "ace": metadata.ace(model, x[:1]),
                "accuracy": {
                    "pytorch": metadata.accuracy(expected, y),
                    "export": metadata.accuracy(found["exported"], y),
                },
                "size_bytes": found["size"],
                "float_size_bytes": float_size,
                "float_size_is": "the float32 ONNX file of the same network",
                "size_ratio": metadata.ratio(float_size, found["size"]),
                "parity": found["parity"].to_dict(),
                **found["extra"],
            }
        )
        tmp.write_bytes((json.dumps(found["meta"], indent=2) + "\n").encode())

    # the export and its metadata are put in place as a unit, or neither is (the old pair is kept)
    size, _ = files.atomic_write_group(
        [
            (path, _checked_writer(format, model, ops, x, expected, threads, info, found, int8)),
            (meta_path, write_metadata),
        ],
        overwrite,
    )
    result_parity, meta = found["parity"], found["meta"]
    return ExportResult(format, path, meta_path, size, float_size, result_parity, meta)


#: checkpoint ``info["inputs"]`` values: how images in [0, 1] are fed to the model
INPUT_SCALINGS = ("unit", "signed")


def scaled_inputs(x: torch.Tensor, inputs: str) -> torch.Tensor:
    """Images in [0, 1] as the model was trained on them: ``unit`` as they are, ``signed`` mapped to [−1, 1]."""
    return x * 2 - 1 if check_choice("inputs", inputs, INPUT_SCALINGS) == "signed" else x
