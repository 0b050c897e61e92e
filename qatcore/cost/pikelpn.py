"""A small PikeLPN-style MobileNet with a switch for each of PikeLPN's techniques, trained and costed.

The network: an input quantiser, a 3×3 stem conv, depthwise-separable blocks (depthwise 3×3 →
norm → clipped ReLU → pointwise 1×1 → norm → clipped ReLU), global average pooling and a linear
classifier. ``PikeLPNConfig`` switches, one at a time, what ``qatcore.cost.pikelpn_layers`` provides:

- ``bits``: weights and activations of the separable blocks (``None``: the float baseline); the
  stem conv and the classifier, and the image, use ``edge_bits`` (8), as is common practice;
- ``quantnorm``: ``QuantNorm`` instead of float batch norm;
- ``double_quant``: the weight and activation quantisers' scales double-quantised;
- ``dhq``: Distribution-Heterogeneous Quantization — depthwise kernels per-channel ``max|w|``,
  pointwise kernels per-channel ``clip_sigmas·std``; without it every kernel is per-tensor ``max|w|``.

``LADDER`` is the notebook's sequence (float → 4-bit with float element-wise operations → +
QuantNorm → + Double Quantization → + DHQ); ``train_ladder`` trains it and ``cost`` prices any
configuration with ``qatcore.cost.ace`` (no training needed: the cost depends on the structure only).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from qatcore.checks import check_choice, int_at_least, positive_number
from qatcore.cost import ace
from qatcore.cost.cost_models import FLOAT_BITS, AceReport
from qatcore.cost.pikelpn_layers import (
    SCALE_FORMATS,
    ActQuant,
    PikeConv2d,
    PikeLinear,
    QuantNorm,
    ScaleFormat,
    WeightQuantizer,
    check_optional_bits,
    quantize_on_range,
    weight_kurtosis,
)
from qatcore.data import Dataset
from qatcore.estimators.train import TrainConfig, TrainResult, train
from qatcore.quantizers import check_bits
from qatcore.runtime import seed_everything
from qatcore.stats import MeanSd

TECHNIQUES = ("quantnorm", "double_quant", "dhq")


@dataclass(frozen=True)
class PikeLPNConfig:
    """The network's shape and which PikeLPN techniques are on (see the module docstring)."""

    bits: int | None = 4
    edge_bits: int = 8
    quantnorm: bool = False
    double_quant: bool = False
    dhq: bool = False
    norm_bits: int = 8
    bias_bits: int = 16
    scale_format: ScaleFormat = "pow2"
    scale_bits: int = 4
    clip_sigmas: float = 3.0
    estimator: str = "ste"
    alpha: float = 4.0
    widths: tuple[int, ...] = (16, 32, 64, 64)
    strides: tuple[int, ...] = (1, 2, 1)
    stem_stride: int = 1
    image_size: int = 8
    in_channels: int = 1
    num_classes: int = 10

    def __post_init__(self) -> None:
        check_optional_bits("bits", self.bits)
        for name in ("edge_bits", "norm_bits", "bias_bits", "scale_bits"):
            try:
                check_bits(getattr(self, name))
            except ValueError:
                raise ValueError(
                    f"{name} must be an int from 1 to 16, got {getattr(self, name)!r}"
                ) from None
        check_choice("scale_format", self.scale_format, SCALE_FORMATS)
        positive_number("clip_sigmas", self.clip_sigmas)
        positive_number("alpha", self.alpha)
        if self.bits is None and any(getattr(self, t) for t in TECHNIQUES):
            raise ValueError(
                f"the techniques {TECHNIQUES} need a quantised model: bits must be an int"
            )
        if len(self.widths) != len(self.strides) + 1:
            raise ValueError(
                f"widths must have one entry more than strides (stem + one per block), "
                f"got {len(self.widths)} widths and {len(self.strides)} strides"
            )
        for w in self.widths:
            int_at_least("each width", w, 1)
        for s in (*self.strides, self.stem_stride):
            int_at_least("each stride", s, 1)
        int_at_least("image_size", self.image_size, 1)
        int_at_least("in_channels", self.in_channels, 1)
        int_at_least("num_classes", self.num_classes, 2)

    def switched(self, **techniques: Any) -> PikeLPNConfig:
        """A copy with some of ``TECHNIQUES`` (or other fields) changed."""
        return dataclasses.replace(self, **techniques)

    @property
    def label(self) -> str:
        """Short name: ``float``, ``W4A4`` or ``W4A4 + QuantNorm + DQ + DHQ``."""
        if self.bits is None:
            return "float"
        names = {"quantnorm": "QuantNorm", "double_quant": "DQ", "dhq": "DHQ"}
        return " + ".join(
            [f"W{self.bits}A{self.bits}", *(names[t] for t in TECHNIQUES if getattr(self, t))]
        )


def default_config(image_size: int = 8, **kwargs) -> PikeLPNConfig:
    """The course's sizes: 8×8 ``digits`` (stride-1 stem), or 28×28 images (stride-2 stem, 3 downsamplings)."""
    if int_at_least("image_size", image_size, 1) >= 16:
        kwargs = {"stem_stride": 2, "strides": (1, 2, 2), **kwargs}
    return PikeLPNConfig(image_size=image_size, **kwargs)


#: The notebook's sequence: each step switches one more technique on.
LADDER: dict[str, dict[str, object]] = {
    "float": {"bits": None},
    "4-bit, float element-wise": {},
    "+ QuantNorm": {"quantnorm": True},
    "+ Double Quantization": {"quantnorm": True, "double_quant": True},
    "+ DHQ (PikeLPN-style)": {"quantnorm": True, "double_quant": True, "dhq": True},
}


def ladder_configs(base: PikeLPNConfig | None = None) -> dict[str, PikeLPNConfig]:
    """``LADDER`` applied to ``base`` (default: ``default_config()``)."""
    base = default_config() if base is None else base
    return {name: base.switched(**changes) for name, changes in LADDER.items()}


class PikeLPN(nn.Sequential):
    """The PikeLPN-style MobileNet of ``config`` (see the module docstring for the layer list)."""

    def __init__(self, config: PikeLPNConfig | None = None) -> None:
        config = default_config() if config is None else config
        if not isinstance(config, PikeLPNConfig):
            raise TypeError(f"config must be a PikeLPNConfig, got {type(config).__name__}")
        c = config
        quantized = c.bits is not None

        def weights(bits: int, scheme: str) -> WeightQuantizer | None:
            if not quantized:
                return None
            return WeightQuantizer(
                bits,
                scheme,
                c.estimator,
                c.double_quant,
                c.scale_format,
                c.scale_bits,
                c.clip_sigmas,
            )

        def conv(c_in, c_out, k, stride, bits, scheme, groups=1) -> PikeConv2d:
            return PikeConv2d(
                c_in,
                c_out,
                k,
                stride=stride,
                padding=k // 2,
                groups=groups,
                weight_quantizer=weights(bits, scheme),
                input_bits=bits if quantized else None,
                double_quant=c.double_quant,
                scale_format=c.scale_format,
                scale_bits=c.scale_bits,
            )

        def norm(channels: int) -> nn.Module:
            if c.quantnorm:
                return QuantNorm(channels, c.norm_bits, c.bias_bits, c.estimator)
            return nn.BatchNorm2d(channels)

        def act() -> ActQuant:
            return ActQuant(
                c.bits,
                c.alpha,
                True,
                c.estimator,
                c.double_quant,
                c.scale_format,
                c.scale_bits,
                integer_input=c.quantnorm,
            )

        depthwise_scheme = "channel-max" if c.dhq else "tensor-max"
        pointwise_scheme = "channel-std" if c.dhq else "tensor-max"
        layers: dict[str, nn.Module] = {}
        if quantized:  # the image in [0, 1] onto an edge_bits grid
            layers["input_quant"] = ActQuant(c.edge_bits, 1.0, False, c.estimator)
        layers["stem"] = conv(
            c.in_channels, c.widths[0], 3, c.stem_stride, c.edge_bits, "tensor-max"
        )
        layers["stem_norm"], layers["stem_act"] = norm(c.widths[0]), act()
        for i, stride in enumerate(c.strides, start=1):
            c_in, c_out = c.widths[i - 1], c.widths[i]
            layers[f"dw{i}"] = conv(c_in, c_in, 3, stride, c.bits, depthwise_scheme, groups=c_in)
            layers[f"dw{i}_norm"], layers[f"dw{i}_act"] = norm(c_in), act()
            layers[f"pw{i}"] = conv(c_in, c_out, 1, 1, c.bits, pointwise_scheme)
            layers[f"pw{i}_norm"], layers[f"pw{i}_act"] = norm(c_out), act()
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten()
        layers["classifier"] = PikeLinear(
            c.widths[-1],
            c.num_classes,
            weight_quantizer=weights(c.edge_bits, "tensor-max"),
            input_bits=c.edge_bits if quantized else None,
            double_quant=c.double_quant,
            scale_format=c.scale_format,
            scale_bits=c.scale_bits,
        )
        super().__init__(OrderedDict(layers))
        self.config = config

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one input image."""
        c = self.config
        return (c.in_channels, c.image_size, c.image_size)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A zero image batch of the configured size (for ``qatcore.cost.ace.count``)."""
        return torch.zeros(batch_size, *self.input_shape)

    def separable_convs(self) -> dict[str, PikeConv2d]:
        """The depthwise and pointwise convs, by name."""
        return {
            n: m
            for n, m in self.named_children()
            if isinstance(m, PikeConv2d) and n[:2] in ("dw", "pw")
        }


def pikelpn_mobilenet(image_size: int = 8, **kwargs) -> PikeLPN:
    """The zoo's factory: ``PikeLPN(default_config(image_size, **kwargs))`` (4-bit, no technique)."""
    return PikeLPN(default_config(image_size, **kwargs))


# --- cost ----------------------------------------------------------------------------------------


def cost(
    config: PikeLPNConfig | PikeLPN, cost_model: str = "acev2", float_bits: int = FLOAT_BITS
) -> AceReport:
    """``qatcore.cost.ace`` report of one inference (one image) of the network (built from ``config``),
    its unquantised operands priced at ``float_bits`` (16: bfloat16, as PokeBNN; 32: float32)."""
    model = config if isinstance(config, PikeLPN) else PikeLPN(config)
    return ace.count(model, model.example_input(1), cost_model=cost_model, float_bits=float_bits)


def cost_summary(report: AceReport) -> dict[str, float]:
    """ACE, ACEv2, energy (pJ) and the element-wise share of ACEv2, from one report."""
    totals = report.totals
    return {
        "macs": totals["macs"],
        "ace": totals["ace"],
        "acev2": totals["acev2"],
        "energy_pj": totals["energy_pj"],
        "elementwise_share": report.elementwise_share("acev2"),
    }


# --- weight distributions (what DHQ answers) -----------------------------------------------------


def separable_weights(model: PikeLPN) -> dict[str, torch.Tensor]:
    """All latent depthwise and all pointwise kernel values, flattened (``"depthwise"``, ``"pointwise"``)."""
    found: dict[str, list[torch.Tensor]] = {"depthwise": [], "pointwise": []}
    for conv in model.separable_convs().values():
        found["depthwise" if conv.depthwise else "pointwise"].append(conv.weight.detach().flatten())
    return {kind: torch.cat(values) for kind, values in found.items()}


def _relative_error(w: torch.Tensor, quantized: torch.Tensor) -> float:
    return float((quantized - w).pow(2).sum() / w.pow(2).sum())


@torch.no_grad()
def distribution_table(
    model: PikeLPN, bits: int = 4, clip_sigmas: float = 3.0
) -> list[dict[str, object]]:
    """Per separable conv: shape statistics and the relative squared quantisation error
    ``‖Q(w) − w‖²/‖w‖²`` of each weight scheme at ``bits`` — why one scheme does not fit both."""
    rows = []
    for name, conv in model.separable_convs().items():
        w = conv.weight.detach()
        per_channel = w.flatten(1).abs().amax(dim=1)
        row: dict[str, object] = {
            "layer": name,
            "kind": "depthwise" if conv.depthwise else "pointwise",
            "weights_per_channel": int(w[0].numel()),
            "kurtosis": weight_kurtosis(w),
            "channel_range_ratio": float(per_channel.max() / per_channel.min().clamp_min(1e-12)),
        }
        for scheme in ("tensor-max", "channel-max", "channel-std"):
            q = WeightQuantizer(bits, scheme, clip_sigmas=clip_sigmas)
            row[scheme] = _relative_error(
                w, quantize_on_range(w, q.weight_range(w), bits, q.estimator)
            )
        rows.append(row)
    return rows


# --- training ------------------------------------------------------------------------------------


@dataclass
class LadderResult:
    """One trained rung: its configuration, test accuracy and costs."""

    name: str
    config: PikeLPNConfig
    test_accuracy: float
    train_accuracy: float
    costs: dict[str, float]
    model: PikeLPN

    def row(self) -> dict[str, object]:
        """Plain numbers for a table."""
        return {
            "model": self.name,
            "label": self.config.label,
            "test_accuracy": self.test_accuracy,
            **self.costs,
        }


def train_pikelpn(
    config: PikeLPNConfig,
    data: Dataset,
    train_config: TrainConfig,
    seed: int = 0,
    progress: bool | None = None,
) -> tuple[PikeLPN, TrainResult]:
    """A freshly seeded ``PikeLPN(config)`` trained on ``data``, and the run's record."""
    seed_everything(seed)
    model = PikeLPN(config)
    return model, train(model, data, train_config, progress=progress)


def train_ladder(
    data: Dataset,
    train_config: TrainConfig,
    configs: dict[str, PikeLPNConfig] | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> list[LadderResult]:
    """Train every configuration (default: ``ladder_configs`` for ``data``'s image size) from the same
    seed, on one thread whatever ``torch``'s setting (so a rerun with other threads gives the same numbers)."""
    if configs is None:
        configs = ladder_configs(
            default_config(
                data.image_size,
                in_channels=int(data.x_train.shape[1]),
                num_classes=data.num_classes,
            )
        )
    results = []
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # one thread: the float sums, hence the runs, do not depend on the setting
    try:
        for name, config in configs.items():
            model, run = train_pikelpn(config, data, train_config, seed, progress)
            results.append(
                LadderResult(
                    name,
                    config,
                    run.test_accuracy,
                    run.train_accuracy,
                    cost_summary(cost(config)),
                    model,
                )
            )
    finally:
        torch.set_num_threads(threads)
    return results


def paired_differences(
    accuracies: Mapping[str, Sequence[float]], points: bool = True
) -> dict[str, MeanSd]:
    """For each rung after the first two (float, then the quantised baseline), the mean and sd over
    seeds of its accuracy minus the rung before it, seed by seed (in points when ``points``)."""
    names = list(accuracies)
    lengths = {len(values) for values in accuracies.values()}
    if len(lengths) != 1:
        raise ValueError(
            f"accuracies must hold the same number of seeds for every rung, got {sorted(lengths)}"
        )
    scale = 100.0 if points else 1.0
    return {
        after: MeanSd.of(
            [scale * (a - b) for a, b in zip(accuracies[after], accuracies[before], strict=True)]
        )
        for before, after in zip(names[1:], names[2:], strict=False)
    }


def seed_study(
    data: Dataset,
    train_config: TrainConfig,
    configs: dict[str, PikeLPNConfig],
    seeds: Iterable[int],
    progress: bool | None = False,
) -> dict[str, list[float]]:
    """Test accuracy of every configuration for each seed (``train_ladder`` once per seed; the
    training configuration's own seed follows it)."""
    accuracies: dict[str, list[float]] = {name: [] for name in configs}
    for seed in seeds:
        run_config = dataclasses.replace(train_config, seed=seed)
        for result in train_ladder(data, run_config, configs, seed=seed, progress=progress):
            accuracies[result.name].append(result.test_accuracy)
    return accuracies


def ladder_table(
    accuracies: Mapping[str, Sequence[float]], costs: Mapping[str, Mapping[str, float]]
) -> list[dict]:
    """One row per rung: mean and sd of its test accuracy over seeds, the paired difference from the
    rung before (``MeanSd`` in points, ``None`` for the first two rungs) and its costs."""
    steps = paired_differences(accuracies)
    return [
        {
            "model": name,
            "test_accuracy": MeanSd.of(values).mean,
            "test_accuracy_sd": MeanSd.of(values).sd,
            "seeds": len(values),
            "step": steps.get(name),
            **costs[name],
        }
        for name, values in accuracies.items()
    ]
