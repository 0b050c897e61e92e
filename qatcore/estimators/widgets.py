"""ipywidgets dashboards for the notebooks: thin, every callback calls qatcore's plots and logic."""

from __future__ import annotations

import ipywidgets as widgets
from IPython.display import display

from qatcore import estimators
from qatcore.checks import positive_number
from qatcore.data import Dataset
from qatcore.estimators.definitions import derive
from qatcore.estimators.plots import (
    TwinRunsFigure,
    plot_estimators,
    plot_trajectory_overlap,
    plot_weight_map,
)
from qatcore.estimators.quadratic import (
    PairedRun,
    QuadraticProblem,
    adjusted_and_unadjusted_runs,
)
from qatcore.live import live_view, rendered
from qatcore.quantizers import step_size


def estimator_view(name: str, bits: int, m: float = 1.0):
    """What the estimator explorer shows: Δ and the levels in a line, and the forward/backward figure."""
    est = estimators.get(name)
    text = f"{name} vs ste, {bits} bits: {2**bits} levels, Δ = {step_size(bits, m):.4g}"
    names = ("ste",) if est.name == "ste" else ("ste", est.name)
    return text, plot_estimators(names, bits, m)


def estimator_explorer(name: str = "dsq", bits: int = 2) -> widgets.VBox:
    """Pick an estimator and a bit width; see Q, the surrogate Q̂ and Q̂′ beside the STE's."""
    return _estimator_and_bits(name, bits, estimator_view)


def _estimator_and_bits(name: str, bits: int, view) -> widgets.VBox:
    """A dropdown of estimators and a bits slider whose every change redraws ``view(name, bits)``."""
    choose = widgets.Dropdown(options=estimators.names(), value=name, description="estimator")
    width = widgets.IntSlider(value=bits, min=1, max=8, description="bits")
    return live_view([choose, width], view)


def describe_weight_map(name: str, bits: int, m: float = 1.0) -> str:
    """One line per estimator: α and how it was computed, or why no weight map exists."""
    est = estimators.get(name)
    try:
        return f"{name}, {bits} bits: α = {est.alpha(bits, m):.4f} ({est.map_method})"
    except ValueError as refusal:
        return f"{name}, {bits} bits: {refusal}"


def weight_map_view(name: str, bits: int, m: float = 1.0):
    """What the weight-map explorer shows: a description and, where a map exists, its figure."""
    text = describe_weight_map(name, bits, m)
    try:
        figure = plot_weight_map((name,), bits, m)
    except ValueError:
        figure = None
    return text, figure


def weight_map_explorer(name: str = "dsq", bits: int = 2) -> widgets.VBox:
    """Pick an estimator and a bit width; see Q̂′, 1/Q̂′, M and α (or why there is no map).

    Every estimator's ``∫ du/Q̂′`` is derived here, once (``definitions.derive``): sympy may look
    for a closed form for seconds before settling on quadrature, and that wait belongs to building
    the dashboard, not to the reader's first pick of that estimator."""
    for option in estimators.names():
        derive(estimators.definition(option))  # cached: every later call returns it at once
    return _estimator_and_bits(name, bits, weight_map_view)


def equivalence_view(
    estimator: str,
    bits: int,
    optimizer: str,
    lr: float,
    epochs: int = 2,
    data: Dataset | None = None,
    progress: bool | None = None,
    cache=None,
):
    """A short equivalence experiment: a summary line and the trajectory figure. An estimator
    outside the theory runs without the adjusted STE, and the line says why. Runs a ``cache``
    (``qatcore.estimators.equivalence.RunCache``) holds are reused, not trained again."""
    from qatcore.estimators.equivalence import EquivalenceConfig, digits_optimizer, run_equivalence

    config = EquivalenceConfig(
        estimator=estimator, bits=bits, optimizer=digits_optimizer(optimizer, lr), epochs=epochs
    )
    try:
        result = run_equivalence(config, data, progress=progress, cache=cache)
        why = ""
    except ValueError as refusal:
        plain = "ablation" if optimizer == "sgd" else "adjusted"  # the STE run that needs no map
        result = run_equivalence(
            config, data, progress=progress, runs=("custom", plain, "jitter"), cache=cache
        )
        why = f" — no remapped STE run: {refusal}"
    summary = result.to_dict()
    parts = [
        f"{name} {summary[key]:.4f}"
        for name, key in (
            ("adjusted", "quantized_weight_agreement"),
            ("jitter", "jitter_agreement"),
            ("ablation", "ablation_agreement"),
        )
        if summary[key] is not None
    ]
    text = (
        f"{estimator}, {bits} bits, {config.optimizer.label}, lr {lr:g}: agreement with the custom run: "
        + ", ".join(parts)
    )
    return text + why, plot_trajectory_overlap(result)


def equivalence_explorer(data: Dataset | None = None, cache=None) -> widgets.VBox:
    """Pick estimator, bits, optimizer and learning rate; press Run for a short live training.
    It opens on the runs at its starting settings, trained once as it is built. With a ``cache``
    (``qatcore.estimators.equivalence.RunCache``) it reuses the runs already trained and keeps its own."""
    choose = widgets.Dropdown(options=estimators.names(), value="dsq", description="estimator")
    width = widgets.IntSlider(value=2, min=1, max=4, description="bits")
    optimizer = widgets.ToggleButtons(options=["sgd", "adam"], value="sgd", description="optimizer")
    rate = widgets.FloatLogSlider(
        value=0.02, base=10, min=-4, max=0, description="lr", readout_format=".1e"
    )
    run = widgets.Button(description="Run", button_style="primary")
    label = widgets.Label()
    out = widgets.Output()

    def go(_=None):
        run.disabled = True
        out.clear_output()
        with out:  # the progress bar shows here while the runs train
            label.value, figure = equivalence_view(
                choose.value, width.value, optimizer.value, rate.value, data=data, cache=cache
            )
            out.clear_output(wait=True)
            if figure is not None:
                display(rendered(figure))
        run.disabled = False

    run.on_click(go)
    go()  # a state before the first click: the runs at the starting settings
    return widgets.VBox(
        [widgets.HBox([choose, width]), optimizer, widgets.HBox([rate, run]), label, out]
    )


#: Training time ``ηt`` of the twin-runs dashboard: long enough that most weights reach a threshold.
TWIN_TIME = 3.0


def twin_runs(
    problem: QuadraticProblem, eta: float, sharpness: float, time: float = TWIN_TIME
) -> tuple[estimators.Estimator, PairedRun, PairedRun]:
    """DSQ at rate ``eta`` on the quadratic ``problem`` (plain SGD, ``round(time/eta)`` steps), paired
    with its STE twin (start ``M(w₀)``, rate ``αη``) and with the unadjusted STE (start ``w₀``, rate ``η``)."""
    dsq = estimators.get("dsq", sharpness=sharpness)
    steps = max(1, round(positive_number("time", time) / positive_number("eta", eta)))
    return dsq, *adjusted_and_unadjusted_runs(problem, dsq, eta, steps)


def twin_runs_view(
    eta: float,
    sharpness: float,
    problem: QuadraticProblem | None = None,
    time: float = TWIN_TIME,
    figure: TwinRunsFigure | None = None,
):
    """What the twin-runs dashboard shows: α and both gaps in a line, and ``plot_twin_runs``'s figure
    (``figure`` redrawn in place where one is given: a dashboard keeps its own from move to move)."""
    problem = QuadraticProblem() if problem is None else problem
    dsq, twin, unadjusted = twin_runs(problem, eta, sharpness, time)
    steps = len(twin.gap) - 1
    text = (
        f"DSQ, sharpness {sharpness:g}, η = {eta:.2g}, {steps} step{'s' * (steps != 1)}: α = {twin.alpha:.3g}; "
        f"largest gap to the remapped STE twin {twin.max_gap:.1e}, to the unadjusted STE {unadjusted.max_gap:.1e}"
    )
    if figure is None:
        figure = TwinRunsFigure(dsq.name, problem.bits, problem.m)
    return text, figure.show(twin, unadjusted, dsq)


def twin_runs_explorer(
    problem: QuadraticProblem | None = None,
    eta: float = 1e-3,
    sharpness: float | None = None,
    time: float = TWIN_TIME,
) -> widgets.VBox:
    """Sliders for DSQ's learning rate η and sharpness; see the DSQ run mapped by ``M`` beside its STE
    twin on the quadratic ``problem`` (default ``QuadraticProblem()``), redrawn when a slider is released."""
    problem = QuadraticProblem() if problem is None else problem
    default = estimators.dsq_default_sharpness(problem.bits)
    sharpness = default if sharpness is None else sharpness
    rate = widgets.FloatLogSlider(
        value=eta,
        base=10,
        min=-3.5,
        max=-1,
        step=0.25,
        description="η",
        readout_format=".1e",
        continuous_update=False,
    )
    sharp = widgets.FloatSlider(
        value=sharpness,
        min=0.5,
        max=round(3 * default),
        step=0.5,
        description="sharpness",
        continuous_update=False,
    )
    figure = TwinRunsFigure(estimators.get("dsq").name, problem.bits, problem.m)
    return live_view(
        [rate, sharp],
        lambda eta, sharpness: twin_runs_view(eta, sharpness, problem, time, figure),
    )
