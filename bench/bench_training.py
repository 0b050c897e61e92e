"""Time one training step of the MNIST CNN: float kernels vs. the STE vs. DSQ, at 2 bits.

A step is forward + cross-entropy + backward + SGD (momentum 0.9) step on one fixed random batch.
Two settings: 28×28 inputs with batch 600 (the paper's MNIST setting) and 8×8 `digits` inputs
with batch 64 (the course's default). All variants start from the same weights and run in the
same process after ``qatcore.runtime.configure(seed=0)``. After a few warm-up steps, each round
times one block of ``--steps`` steps of every variant, round-robin (the order rotates every
round), so drift from other load on the machine hits all variants alike. Reported: the median
over rounds of the time per step, and the medians of the per-round ratios DSQ/STE and STE/float.

A second table times DSQ's backward alone, one call on a 64×32×3×3 kernel: the bound estimator
(``Estimator.bind``, constants folded by sympy) against the same closed form written by hand in
torch, interleaved call by call.

Acceptance criteria: DSQ costs at most 1.1× the STE step on every row, and DSQ's bound backward at
most 1.5× the hand-written one; the script exits 1 otherwise. Run from the repository root:

    .venv/bin/python bench/bench_training.py            # full run, about 1–2 minutes
    .venv/bin/python bench/bench_training.py --quick    # smoke run, prints only
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from qatcore import estimators, runtime
from qatcore.estimators.layers import QuantConv2d
from qatcore.estimators.models import MNISTCNN

BITS = 2
LR = 1e-3
MOMENTUM = 0.9
VARIANTS = ("float", "ste", "dsq")
LIMIT = 1.1  # DSQ may cost at most this many STE steps
BACKWARD_LIMIT = 1.5  # the bound DSQ backward may cost at most this many hand-written ones
BACKWARD_SHAPE = (64, 32, 3, 3)
RESULTS = Path(__file__).resolve().parent / "results" / "training.md"


@dataclass(frozen=True)
class Setting:
    name: str
    image_size: int
    batch: int
    steps: int  # default steps per timed block
    quick_steps: int


SETTINGS = (
    Setting("MNIST 28×28, batch 600", 28, 600, steps=2, quick_steps=1),
    Setting("digits 8×8, batch 64", 8, 64, steps=60, quick_steps=10),
)
DEFAULT_REPEATS, QUICK_REPEATS = 11, 3
DEFAULT_WARMUP, QUICK_WARMUP = 3, 1


def float_twin(model: MNISTCNN) -> nn.Sequential:
    """A copy of ``model`` whose QuantConv2d kernels are plain nn.Conv2d with the same weights."""
    layers = []
    for layer in model:
        if isinstance(layer, QuantConv2d):
            conv = nn.Conv2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                groups=layer.groups,
                bias=layer.bias is not None,
            )
            layers.append(conv)
        else:
            layers.append(copy.deepcopy(layer))
    twin = nn.Sequential(*layers)
    twin.load_state_dict(model.state_dict())  # same parameter names, so the same weights
    return twin


def build_models(setting: Setting) -> dict[str, nn.Module]:
    """The three variants of the CNN for ``setting``, all starting from the same weights."""
    ste = MNISTCNN(bits=BITS, estimator="ste", image_size=setting.image_size)
    dsq = MNISTCNN(bits=BITS, estimator="dsq", image_size=setting.image_size)
    dsq.load_state_dict(ste.state_dict())
    flt = float_twin(ste)
    return {"float": flt, "ste": ste, "dsq": dsq}


class Trainer:
    """One variant: its model, SGD optimizer and the fixed batch; ``run(n)`` does n steps."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model = model.train()
        self.optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        self.x, self.y = x, y

    def run(self, steps: int) -> float:
        """Seconds per step over ``steps`` steps."""
        start = time.perf_counter()
        for _ in range(steps):
            self.optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(self.x), self.y)
            loss.backward()
            self.optimizer.step()
        return (time.perf_counter() - start) / steps


@dataclass
class Row:
    setting: Setting
    steps: int
    times: dict[str, list[float]]  # seconds per step, one per round

    def median_ms(self, variant: str) -> float:
        return 1e3 * statistics.median(self.times[variant])

    def spread_ms(self, variant: str) -> tuple[float, float]:
        return 1e3 * min(self.times[variant]), 1e3 * max(self.times[variant])

    def ratio(self, top: str, bottom: str) -> float:
        """Median over rounds of the paired ratio: both blocks ran in the same round."""
        pairs = zip(self.times[top], self.times[bottom], strict=True)
        return statistics.median(a / b for a, b in pairs)

    @property
    def passed(self) -> bool:
        return self.ratio("dsq", "ste") <= LIMIT


def bench_setting(setting: Setting, steps: int, repeats: int, warmup: int, bar: tqdm) -> Row:
    runtime.configure(seed=0)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(setting.batch, 1, setting.image_size, setting.image_size, generator=generator)
    y = torch.randint(0, 10, (setting.batch,), generator=generator)
    trainers = {name: Trainer(model, x, y) for name, model in build_models(setting).items()}
    for trainer in trainers.values():
        trainer.run(warmup)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_ in range(repeats):
        shift = round_ % len(VARIANTS)
        for name in VARIANTS[shift:] + VARIANTS[:shift]:
            gc.collect()
            times[name].append(trainers[name].run(steps))
            bar.update(1)
    return Row(setting, steps, times)


def hand_written_dsq_backward(m: float, bits: int):
    """DSQ's ``grad · Q̂′(w)`` typed out in torch (the authors' closed form), for comparison."""
    delta = 2 * m / (2**bits - 1)
    k = estimators.dsq_default_sharpness(bits) / m
    scale = delta / 2 * k / math.tanh(k * delta / 2)

    def backward(w: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        index = torch.clamp(torch.floor((w + m) / delta), 0, 2**bits - 2)
        offset = w - (-m + (index + 0.5) * delta)
        return grad * torch.where(w.abs() <= m, scale / torch.cosh(k * offset) ** 2, 0.0)

    return backward


def bench_backward(calls: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of the bound DSQ backward and the hand-written one, round-robin."""
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(BACKWARD_SHAPE, generator=generator) * 0.1
    grad = torch.randn(BACKWARD_SHAPE, generator=generator)
    m = math.sqrt(6 / (BACKWARD_SHAPE[1] * 9))
    bound = estimators.get("dsq").bind(BITS, m)
    typed = hand_written_dsq_backward(m, BITS)
    variants = {"bound": lambda: grad * bound.derivative(w), "hand-written": lambda: typed(w, grad)}
    assert torch.allclose(variants["bound"](), variants["hand-written"](), rtol=1e-5, atol=1e-7)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(repeats):
        for name in sorted(variants, reverse=bool(round_ % 2)):
            start = time.perf_counter()
            for _ in range(calls):
                variants[name]()
            times[name].append((time.perf_counter() - start) / calls)
    return times


def backward_table(times: dict[str, list[float]]) -> tuple[list[str], bool]:
    ratio = statistics.median(
        a / b for a, b in zip(times["bound"], times["hand-written"], strict=True)
    )
    passed = ratio <= BACKWARD_LIMIT
    lines = [
        f"| kernel | bound DSQ µs/call | hand-written µs/call | bound/hand-written | ≤ {BACKWARD_LIMIT}× |",
        "|---|---|---|---|---|",
        f"| {'×'.join(map(str, BACKWARD_SHAPE))} | {1e6 * statistics.median(times['bound']):.1f} "
        f"| {1e6 * statistics.median(times['hand-written']):.1f} | {ratio:.2f} | {'PASS' if passed else 'FAIL'} |",
    ]
    return lines, passed


def machine_facts() -> list[str]:
    return [
        f"- torch {torch.__version__}, {torch.get_num_threads()} threads "
        f"(`qatcore.runtime.configure`; `$QATCORE_THREADS` overrides), "
        f"deterministic algorithms on",
        f"- CPUs: {os.cpu_count()} (`os.cpu_count()`), processor: "
        f"{platform.processor() or platform.machine()}",
        f"- Python {platform.python_version()} on {platform.system()}",
    ]


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| setting | steps × rounds | float ms/step | STE ms/step | DSQ ms/step "
        f"| STE/float | DSQ/STE | DSQ ≤ {LIMIT}× STE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row.setting.name, f"{row.steps} × {len(row.times['ste'])}"]
        for name in VARIANTS:
            low, high = row.spread_ms(name)
            cells.append(f"{row.median_ms(name):.2f} ({low:.2f}–{high:.2f})")
        cells += [
            f"{row.ratio('ste', 'float'):.2f}",
            f"{row.ratio('dsq', 'ste'):.2f}",
            "PASS" if row.passed else "FAIL",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report(
    rows: list[Row],
    repeats: int,
    warmup: int,
    quick: bool,
    backward: list[str],
    backward_passed: bool,
) -> str:
    passed = all(row.passed for row in rows) and backward_passed
    lines = [
        "# Training-step benchmark: float vs. STE vs. DSQ (MNIST CNN, 2 bits)",
        "",
        "Written by `bench/bench_training.py`"
        + (" (`--quick` smoke run)" if quick else "")
        + "; see `bench/README.md`.",
        "",
        "## Machine",
        "",
        *machine_facts(),
        "",
        "## Settings",
        "",
        f"- model: `qatcore.estimators.models.MNISTCNN`, {BITS} bits, only the two conv kernels quantized; "
        "float = the same network with plain `nn.Conv2d` kernels (same initial weights)",
        f"- step: forward + cross-entropy + backward + SGD step (lr {LR:g}, momentum {MOMENTUM}) "
        "on one fixed random batch",
        f"- warm-up: {warmup} step(s) per variant; then {repeats} rounds, each timing one block of "
        "steps per variant, round-robin with the order rotating every round",
        "- times: median ms per step over the rounds (min–max in brackets); ratios: median of "
        "the per-round ratios",
        "",
        "## Results",
        "",
        *table(rows),
        "",
        "## DSQ's backward alone",
        "",
        "One call of `grad · Q̂′(w)`: the bound estimator (`Estimator.bind`: Δ, m and the sharpness "
        "substituted before lambdify) against the same closed form typed out in torch; median of "
        "interleaved rounds.",
        "",
        *backward,
        "",
        f"Acceptance criteria: DSQ costs at most {LIMIT}× the STE step (on every row), and the bound "
        f"backward at most {BACKWARD_LIMIT}× the hand-written one: "
        + ("**PASS**" if passed else "**FAIL**"),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"timed rounds per setting (default {DEFAULT_REPEATS}, --quick {QUICK_REPEATS})",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="steps per timed block, for every setting (default: "
        + ", ".join(f"{s.steps} for {s.name}" for s in SETTINGS)
        + ")",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"warm-up steps per variant (default {DEFAULT_WARMUP}, --quick {QUICK_WARMUP})",
    )
    parser.add_argument("--quick", action="store_true", help="fast smoke run (prints only)")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="markdown file to write (default bench/results/training.md; "
        "--quick writes nothing unless given)",
    )
    args = parser.parse_args(argv)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)
    warmup = args.warmup
    if warmup is None:
        warmup = QUICK_WARMUP if args.quick else DEFAULT_WARMUP
    checks = (("--repeats", repeats, 1), ("--steps", args.steps, 1), ("--warmup", warmup, 0))
    for name, value, low in checks:
        if value is not None and value < low:
            parser.error(f"{name} must be >= {low}, got {value}")
    output = args.output if args.output is not None or args.quick else RESULTS

    runtime.configure(seed=0)
    plan = [(s, args.steps or (s.quick_steps if args.quick else s.steps)) for s in SETTINGS]
    rows = []
    with tqdm(total=len(plan) * repeats * len(VARIANTS), desc="blocks", file=sys.stderr) as bar:
        for setting, steps in plan:
            bar.set_postfix_str(setting.name)
            rows.append(bench_setting(setting, steps, repeats, warmup, bar))

    backward, backward_passed = backward_table(
        bench_backward(calls=20 if args.quick else 200, repeats=repeats)
    )
    text = report(rows, repeats, warmup, args.quick, backward, backward_passed)
    print(text)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        print(f"written to {output}", file=sys.stderr)
    return 0 if all(row.passed for row in rows) and backward_passed else 1


if __name__ == "__main__":
    sys.exit(main())
