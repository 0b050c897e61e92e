"""Measuring a real training step: what autograd keeps, and the process's peak memory.

*Held bytes* are counted, not estimated: a ``torch.autograd.graph.saved_tensors_hooks`` pack hook
sees every tensor autograd keeps for backward (torch's own ops and our Functions alike); each
storage is counted once (by ``data_ptr``, with its ``nbytes``), leaving out the parameters and
buffers, which are counted with the gradients and the optimiser state. This is the quantity the
analytic model (``qatcore.bnn.memory``) predicts.

*Peak process memory* is the resident set's high-water mark (``VmHWM``) during one step, after
resetting it by writing ``5`` to ``/proc/self/clear_refs``, minus the resident set before the step.
It adds what the model leaves out: the forward outputs nobody saves, the backward's gradients in
flight and float32 working copies. tracemalloc cannot see torch's allocations (they bypass
Python's allocator) and psutil reports only the current RSS, not a peak. glibc would keep freed
blocks resident, counting memory nobody holds, so during the measured step ``measure_step`` asks
it (``mallopt``) to map every block of 16 KiB or more on its own and return it on free (slower, so
only for that step). At 64 KiB the low-memory MLP, whose many small packed tensors come and go,
read about 0.4 MiB (a tenth of its peak) higher from freed heap blocks; the standard mode's peak
does not change. Linux only: elsewhere the peak is ``None``.
"""

from __future__ import annotations

import ctypes
import gc
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from qatcore.bnn import streamed
from qatcore.bnn.models import MODELS, set_mode
from qatcore.bnn.optim import make_optimizer
from qatcore.bnn.train import training_step
from qatcore.checks import check_choice, int_at_least
from qatcore.optimizers import OptimizerConfig

_STATUS = Path("/proc/self/status")
_M_MMAP_THRESHOLD = -3
#: blocks of at least this many bytes are mapped on their own and returned to the system when freed
MMAP_THRESHOLD = 16 * 1024


@dataclass(frozen=True)
class Measurement:
    """Bytes a real training step holds, by part, and its peak resident-memory increase (``peak_rss_bytes``, read
    in this process: memory freed by earlier work and kept by the allocator can hide part of it, so compare peaks
    read by ``measured_peak`` in fresh processes)."""

    mode: str
    batch_size: int
    saved_bytes: int
    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    peak_rss_bytes: int | None

    @property
    def held_bytes(self) -> int:
        """Saved tensors + parameters and buffers + gradients + optimiser state."""
        return self.saved_bytes + self.parameter_bytes + self.gradient_bytes + self.optimizer_bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "held_bytes": self.held_bytes}


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def reset_peak() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def return_freed_memory(on: bool = True) -> None:
    """With ``on``, ask glibc to mmap every block of ``MMAP_THRESHOLD`` bytes or more (returned to the system
    when freed) and trim its heap; without, set the threshold to glibc's largest dynamic value (32 MiB), so later
    steps run at full speed again. A no-op where glibc is missing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD if on else 32 * 2**20)
        if on:
            libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def tensor_bytes(tensors) -> int:
    """Bytes of the tensors' distinct storages."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def _input_shape(model: nn.Module) -> tuple[int, ...]:
    """The shape (no batch) of one input of a model of ``MODELS``, which carry it as ``input_shape``."""
    return cast(tuple[int, ...], model.input_shape)


def _optimizer_tensors(optimizer):
    return [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]


def measure_step(
    model: nn.Module,
    mode: str,
    batch_size: int,
    seed: int = 0,
    *,
    optimizer: str = "bnn_adam",
    gradient: str = "po2",
) -> Measurement:
    """Switch ``model`` to ``mode``, take one warm-up step (so the optimiser has state), then measure a step."""
    batch_size = int_at_least("batch_size", batch_size, 2)
    set_mode(model, mode, gradient)
    model.train()
    opt = make_optimizer(model, mode, optimizer=optimizer)
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand((batch_size, *_input_shape(model)), generator=generator) * 2 - 1
    classes = model(x[:2]).shape[1]
    y = torch.randint(0, classes, (batch_size,), generator=generator)
    training_step(model, opt, x, y)
    opt.zero_grad(set_to_none=True)
    owned = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in owned:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    return_freed_memory()
    try:
        gc.collect()
        before = _status_kib("VmRSS")
        peak_ok = reset_peak() and before is not None
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        bits = [getattr(p, "grad_bits", None) for p in model.parameters()]  # the 1-bit dW
        gradients = tensor_bytes(
            [p.grad for p in model.parameters() if p.grad is not None]
            + [b for b in bits if b is not None]
        )
        opt.step()
        peak = _status_kib("VmHWM") if peak_ok else None
    finally:
        return_freed_memory(on=False)
    return Measurement(
        mode=mode,
        batch_size=batch_size,
        saved_bytes=sum(kept.values()),
        parameter_bytes=tensor_bytes([*model.parameters(), *model.buffers()]),
        gradient_bytes=gradients,
        optimizer_bytes=tensor_bytes(_optimizer_tensors(opt)),
        peak_rss_bytes=None if peak is None or before is None else peak - before,
    )


def _new_training(
    model_name: str,
    mode: str,
    batch_size: int,
    optimizer: str,
    gradient: str,
    seed: int,
    device: torch.device | str = "cpu",
):
    """A fresh model of ``MODELS`` in ``mode`` on ``device``, its optimiser and one seeded random
    batch: what the peak measurements train."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = set_mode(MODELS[model_name](), mode, gradient).train().to(device)
    x = torch.rand((batch_size, *_input_shape(net)), generator=generator) * 2 - 1
    y = torch.randint(0, 10, (batch_size,), generator=generator)
    return net, make_optimizer(net, mode, optimizer=optimizer), x.to(device), y.to(device)


def peak_in_this_process(
    model_name: str,
    mode: str,
    batch_size: int,
    optimizer: str = "bnn_adam",
    gradient: str = "po2",
    seed: int = 0,
    steps: int = 2,
    budgets: dict | None = None,
) -> int | None:
    """Peak resident memory of training one of ``MODELS`` ``steps`` steps at ``batch_size``, over this process's
    resident set before the model exists: the high-water mark covers the weights, the optimiser's
    state, every forward and backward. A first step of a throw-away copy, at the same batch, loads
    the kernels' code, thread pools and per-shape caches beforehand, so they do not count. Meant for a fresh
    process (``measured_peak``); glibc returns freed blocks of ``MMAP_THRESHOLD`` bytes or more. ``budgets``: the
    streamed step's chunks and budgets (the arguments of ``qatcore.bnn.streamed.budgets``; default: its own)."""
    training = (model_name, mode, batch_size, optimizer, gradient, seed)
    before = _baseline_after_a_throwaway_step(training, budgets)
    if before is None:
        return None
    net, opt, x, y = _new_training(*training)
    with streamed.budgets(**(budgets or {})):
        for _ in range(steps):
            training_step(net, opt, x, y)
    peak = _status_kib("VmHWM")
    return None if peak is None else peak - before


def _baseline_after_a_throwaway_step(training: tuple, budgets: dict | None) -> int | None:
    """This process's resident set, its high-water mark reset to it, after one step of a throw-away copy of the
    training ``_new_training(*training)`` makes (at ``budgets``) loaded the kernels and caches; None where either
    cannot be read (not Linux). glibc returns freed blocks from here on (``return_freed_memory``)."""
    return_freed_memory()
    with streamed.budgets(**(budgets or {})):
        training_step(*_new_training(*training))
    gc.collect()
    return_freed_memory()
    before = _status_kib("VmRSS")
    return before if before is not None and reset_peak() else None


def peak_on_gpu(
    model_name: str,
    mode: str,
    batch_size: int,
    device: str | torch.device = "cuda",
    optimizer: str = "bnn_adam",
    gradient: str = "po2",
    seed: int = 0,
    steps: int = 3,
) -> dict[str, float]:
    """On a CUDA device, what ``peak_in_this_process`` measures on the CPU: the allocator's high-water mark
    (``torch.cuda.max_memory_allocated``) while one of ``MODELS`` trains ``steps`` steps at ``batch_size``, over
    what was allocated before the model existed, as ``peak_bytes``; and the median seconds per step, the device
    synchronised around each, as ``seconds_per_step``. A first step of a throw-away copy warms the kernels up.
    The GPU allocator's peak counts every tensor alive at once, with none of the CPU's resident-set noise: it is
    the number an edge GPU's memory must hold."""
    import time

    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(
            f"device must be a CUDA device, got {device}; on the CPU use measured_peak"
        )
    if not torch.cuda.is_available():
        raise RuntimeError(
            "no CUDA device is available here: measure on the CPU with measured_peak"
        )
    check_choice("model_name", model_name, sorted(MODELS))
    batch_size, steps = int_at_least("batch_size", batch_size, 2), int_at_least("steps", steps, 1)

    def train(count: int) -> list[float]:
        net, opt, x, y = _new_training(
            model_name, mode, batch_size, optimizer, gradient, seed, device
        )
        seconds = []
        for _ in range(count):
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            training_step(net, opt, x, y)
            torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - start)
        return seconds

    train(1)
    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    seconds = train(steps)
    peak = torch.cuda.max_memory_allocated(device) - before
    return {
        "peak_bytes": float(peak),
        "seconds_per_step": float(sorted(seconds)[len(seconds) // 2]),
    }


def operator_count(model_name: str, mode: str, batch_size: int, optimizer: str = "bnn_adam") -> int:
    """How many PyTorch operators the second training step of one of ``MODELS`` dispatches at ``batch_size``
    (power-of-two ``dY``, seed 0), counted below autograd, where each is one kernel launch on a GPU. Where a
    step's arithmetic is small, as on a GPU, the count sets its time: the streamed low-memory step runs its
    operators chunk by chunk."""
    from torch.utils._python_dispatch import TorchDispatchMode

    check_choice("model_name", model_name, sorted(MODELS))
    batch_size = int_at_least("batch_size", batch_size, 2)

    class Counted(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Counted.count += 1
            return func(*args, **(kwargs or {}))

    net, opt, x, y = _new_training(model_name, mode, batch_size, optimizer, "po2", 0)
    training_step(net, opt, x, y)  # the first step makes the optimiser's state
    with Counted():
        training_step(net, opt, x, y)
    return Counted.count


#: the parts of a training step whose resident-memory high-water marks ``phase_peaks_in_this_process`` reads
PHASES = ("forward", "backward", "optimizer")


def phase_peaks_in_this_process(
    model_name: str,
    mode: str,
    batch_size: int,
    optimizer: str = "bnn_adam",
    gradient: str = "po2",
    seed: int = 0,
    steps: int = 2,
    budgets: dict | None = None,
) -> dict[str, int] | None:
    """Where ``peak_in_this_process``'s peak is reached: bytes over the resident set before the model exists, as
    it measures them, once the model and optimiser are ``built``, ``between_steps`` (after the last step: the
    weights, the optimiser's state, the batch and whatever the allocator keeps) and the high-water mark of each of
    ``PHASES`` (the loss's forward pass, its backward pass, the optimiser's step), the highest over ``steps`` steps.
    The step is ``training_step``'s, read between its parts. None where the peak cannot be read (not Linux)."""
    steps = int_at_least("steps", steps, 1)
    training = (model_name, mode, batch_size, optimizer, gradient, seed)
    before = _baseline_after_a_throwaway_step(training, budgets)
    if before is None:
        return None
    net, opt, x, y = _new_training(*training)
    built = _status_kib("VmRSS")
    peaks = dict.fromkeys(PHASES, 0)

    def high_water(phase: str, part: Callable[[], Any]) -> Any:
        reset_peak()
        result = part()
        peaks[phase] = max(peaks[phase], cast(int, _status_kib("VmHWM")) - before)
        return result

    with streamed.budgets(**(budgets or {})):
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = high_water("forward", lambda: F.cross_entropy(net(x), y))
            high_water("backward", loss.backward)
            del loss
            high_water("optimizer", opt.step)
    after = _status_kib("VmRSS")
    if built is None or after is None:
        return None
    return {"built": built - before, "between_steps": after - before, **peaks}


def _in_a_fresh_process(function: str, *args: Any, **keywords: Any) -> Any:
    """``function`` of this module called in a fresh Python process (so no earlier allocation hides a peak); its
    JSON result."""
    import json
    import subprocess
    import sys

    code = (
        f"import json; from qatcore.bnn.measure import {function} as f; "
        f"print(json.dumps(f(*json.loads({json.dumps(args)!r}), **json.loads({json.dumps(keywords)!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:  # the child's own error, not only its exit status
        raise RuntimeError(
            f"{function} failed: {(out.stderr.strip().splitlines() or ['no output'])[-1]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measured_peak(*args: Any, **keywords: Any) -> int | None:
    """``peak_in_this_process`` (the same arguments) run in a fresh Python process (so no earlier allocation hides
    the peak) for one of ``MODELS``; None where the peak cannot be read (not Linux)."""
    return _in_a_fresh_process("peak_in_this_process", *args, **keywords)


def measured_phase_peaks(*args: Any, **keywords: Any) -> dict[str, int] | None:
    """``phase_peaks_in_this_process`` (the same arguments) run in a fresh Python process for one of ``MODELS``."""
    return _in_a_fresh_process("phase_peaks_in_this_process", *args, **keywords)


def memory_summary(
    model: str,
    batch_size: int,
    measure: bool = False,
    seed: int = 0,
    *,
    optimizer: str = "bnn_adam",
    accounting: str = "autograd",
    gradient: str = "po2",
) -> dict:
    """Modelled bytes of both modes under ``accounting`` (``standard_bytes``, ``low_memory_bytes``, ``ratio``,
    per-kind breakdowns) and, with ``measure``, the measured figures of one real step of each mode."""
    from qatcore.bnn.memory import accounting_rows, bytes_by_kind, layer_shapes, total_bytes

    check_choice("model", model, sorted(MODELS))
    batch_size = int_at_least("batch_size", batch_size, 2)
    torch.manual_seed(seed)
    net = MODELS[model]()
    shapes = layer_shapes(net)
    rows = {
        mode: accounting_rows(
            net,
            batch_size,
            mode,
            accounting=accounting,
            optimizer=OptimizerConfig.of(optimizer).name,
            gradient=gradient,
            shapes=shapes,
        )
        for mode in ("standard", "low_memory")
    }
    summary: dict[str, Any] = {
        "model": model,
        "batch_size": batch_size,
        "accounting": accounting,
        "optimizer": optimizer,
        "gradient": gradient,
        "standard_bytes": total_bytes(rows["standard"]),
        "low_memory_bytes": total_bytes(rows["low_memory"]),
        "by_kind": {mode: bytes_by_kind(r) for mode, r in rows.items()},
    }
    summary["ratio"] = summary["standard_bytes"] / summary["low_memory_bytes"]
    if measure:
        measured = {
            mode: measure_step(net, mode, batch_size, seed, optimizer=optimizer).to_dict()
            for mode in rows
        }
        summary["measured"] = measured
        summary["measured_ratio"] = (
            measured["standard"]["held_bytes"] / measured["low_memory"]["held_bytes"]
        )
        for mode in rows:
            summary[f"measured_peak_{mode}_bytes"] = measured_peak(
                model, mode, batch_size, optimizer=optimizer, seed=seed
            )
    return summary
