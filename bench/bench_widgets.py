"""How fast each notebook's widget answers a click: every control moved as a reader would move it.

Each widget is built with the arguments its notebook gives it (digits, the default models), then
each of its controls is moved to a neighbouring value and back, ``--repeats`` times; the time of
one move is the synchronous redraw its observer runs (what the reader waits for before the new
figure shows), including the figure's rendering to PNG as the notebooks' ``%matplotlib inline``
renders it (an IPython shell with the inline backend formats every figure the widget displays;
the move fails if no figure came out, unless the view answers that setting with a line of text, as
the weight-map dashboard does for an estimator with no map). A dashboard with a Run button is timed
by pressing Run. Then every other setting of each control (each option of a choice, a slider's two
ends) is visited ``--repeats`` times, and the slowest setting's median is judged like a neighbour's;
the slowest first visit, which carries one-time work (a symbolic derivation, a compilation), is
reported beside it. Caches shared across the process (sympy's derivations) carry over from one
dashboard to the next, as they do from cell to cell of a notebook. Our targets: Run of notebook
02's dashboard at most 3 s; every other redraw, at any setting, at most 0.5 s. Writes
``bench/results/widgets.md`` and ``widgets.json``; exits 1 if a target is missed.

    .venv/bin/python bench/bench_widgets.py              # all widgets, a few minutes
    .venv/bin/python bench/bench_widgets.py --only 02    # one notebook's widget, printed only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import ipywidgets as widgets
from IPython.core.interactiveshell import InteractiveShell

from qatcore import data, runtime, zoo

RESULTS = Path(__file__).resolve().parent / "results"
RUN_TARGET_S, REDRAW_TARGET_S = 3.0, 0.5


class _Shell(InteractiveShell):
    """An IPython shell without a GUI event loop: ``%matplotlib inline`` only needs the formatters."""

    def enable_gui(self, gui=None):
        pass


def inline_shell() -> list[dict]:
    """Start an IPython shell with the notebooks' ``%matplotlib inline``; what it displays (each a
    mime bundle, the figure rendered to ``image/png`` by the inline backend) is kept in the list returned."""
    shell = _Shell.instance()
    shell.enable_matplotlib("inline")
    shown: list[dict] = []
    shell.display_pub.publish = lambda data, metadata=None, **_: shown.append(data)
    return shown


def builders() -> dict[str, Callable[[], widgets.Widget]]:
    """Each notebook's widget, built as the notebook builds it (by notebook number)."""

    def n00():
        from qatcore.estimators.widgets import estimator_explorer

        return estimator_explorer("dsq", 2)

    def n01():
        from qatcore.estimators import quadratic
        from qatcore.estimators.widgets import twin_runs_explorer

        return twin_runs_explorer(quadratic.QuadraticProblem(bits=2, seed=0), 1e-3, time=3.0)

    def n01_weight_map():
        from qatcore.estimators.widgets import weight_map_explorer

        return weight_map_explorer("dsq", 2)

    def n02():
        from qatcore.estimators.widgets import equivalence_explorer

        return equivalence_explorer(data.load_digits())

    def n03():
        from qatcore.architectures import MobileNetV1
        from qatcore.cost.widgets import bit_width_explorer

        mobilenet = MobileNetV1(1.0, 32, num_classes=10)
        return bit_width_explorer(mobilenet, mobilenet.example_input())

    def n04():
        from qatcore.cost.pikelpn import default_config
        from qatcore.cost.widgets import technique_explorer

        return technique_explorer(default_config(8, num_classes=10))

    def n05():
        from qatcore.bnn.widgets import memory_explorer

        return memory_explorer("cnv", 100)

    def n06():
        from qatcore.export.widgets import export_explorer

        digits = data.load_digits()
        cnn = zoo.build("mnist_cnn", image_size=digits.image_size, num_classes=10)
        return export_explorer(cnn, digits.x_test, digits.y_test, bits=2)

    return {
        "00": n00,
        "01": n01,
        "01 weight map": n01_weight_map,
        "02": n02,
        "03": n03,
        "04": n04,
        "05": n05,
        "06": n06,
    }


def controls(widget: widgets.Widget) -> list[widgets.Widget]:
    """The controls of ``widget`` (value widgets and buttons), depth first."""
    found = []
    for child in getattr(widget, "children", ()):
        if isinstance(child, widgets.Button) or (
            isinstance(child, widgets.ValueWidget) and not isinstance(child, widgets.Label)
        ):
            found.append(child)
        found += controls(child)
    return found


def texts(widget: widgets.Widget) -> list[str]:
    """The values of the widget's labels, depth first: the line of text a view writes."""
    own = [widget.value] if isinstance(widget, widgets.Label) else []
    return own + [t for child in getattr(widget, "children", ()) for t in texts(child)]


def neighbour(control: widgets.ValueWidget):
    """A value next to the control's current one (the next option, or one step)."""
    if hasattr(control, "options"):
        options = [o[1] if isinstance(o, tuple) else o for o in control.options]
        return options[(options.index(control.value) + 1) % len(options)]
    if isinstance(control, widgets.Checkbox):
        return not control.value
    if isinstance(control, widgets.FloatLogSlider):
        up = control.value * control.base**control.step
        return up if up <= control.base**control.max else control.value / control.base**control.step
    up = control.value + control.step
    return up if up <= control.max else control.value - control.step


def far_settings(control: widgets.ValueWidget) -> list:
    """The settings a reader reaches in one move beyond the neighbours: every other option of a
    choice, both ends of a slider (a log slider's in its values, not exponents)."""
    if hasattr(control, "options"):
        options = [o[1] if isinstance(o, tuple) else o for o in control.options]
        return [o for o in options if o != control.value]
    if isinstance(control, widgets.FloatLogSlider):
        ends = [control.base**control.min, control.base**control.max]
    elif hasattr(control, "min"):
        ends = [control.min, control.max]
    else:
        return []
    return [end for end in ends if end != control.value]


def slowest_setting(control: widgets.ValueWidget, repeats: int) -> dict:
    """Each of ``far_settings`` visited ``repeats`` times (the control put back after each): the
    setting with the slowest median move (``at``, ``slowest``), and the slowest first visit
    (``first``), which carries any one-time work (a derivation, a compilation)."""
    start = control.value
    medians, firsts = {}, []
    for value in far_settings(control):
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            control.value = value
            seconds.append(time.perf_counter() - started)
            control.value = start
        medians[value], firsts = statistics.median(seconds), [*firsts, seconds[0]]
    at = max(medians, key=lambda v: medians[v])
    return {"slowest": medians[at], "at": at, "first": max(firsts)}


def time_widget(build: Callable[[], widgets.Widget], repeats: int, shown: list[dict]) -> dict:
    """Median seconds per move of each control of the widget ``build`` makes (``shown``: what the shell
    displays, from ``inline_shell``), and its slowest far setting (``slowest_setting``: seconds and
    the setting). Every move to a neighbour must display a PNG figure, except on a dashboard with a
    Run button, whose other controls only set what Run trains (their rows: None)."""
    widget = build()
    rows: dict[str, dict | None] = {}
    found = controls(widget)
    has_run = any(isinstance(c, widgets.Button) for c in found)
    for control in found:
        seconds = []
        if isinstance(control, widgets.Button):
            name = f"button {control.description}"
            moves = [control.click] * repeats
        else:
            name = f"{type(control).__name__} {control.description}"
            start = control.value
            moves = [
                lambda v=value, c=control: setattr(c, "value", v)
                for _ in range(repeats)
                for value in (neighbour(control), start)
            ]
        drawn = []
        for move in moves:
            before, said = len(shown), texts(widget)
            started = time.perf_counter()
            move()
            seconds.append(time.perf_counter() - started)
            # a figure, or (outside a Run dashboard) a new line of text where a setting has no figure
            drawn.append(
                any("image/png" in bundle for bundle in shown[before:])
                or (not has_run and texts(widget) != said)
            )
        if all(drawn):
            rows[name] = {"median": statistics.median(seconds)}
            if not isinstance(control, widgets.Button) and far_settings(control):
                rows[name].update(slowest_setting(control, repeats))
        elif has_run and not any(drawn) and not isinstance(control, widgets.Button):
            rows[name] = None  # an input of Run: it draws nothing
        else:
            raise RuntimeError(
                f"{name}: {drawn.count(False)} of {len(drawn)} moves displayed no figure"
            )
    return rows


def shown_as(setting: object) -> str:
    """A setting as the table names it: a number to 4 significant digits, or its name."""
    return f"{setting:.4g}" if isinstance(setting, float) else str(setting)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="", help="one notebook's widget (e.g. 02); printed, not written"
    )
    parser.add_argument("--repeats", type=int, default=5, help="moves of each control (default 5)")
    args = parser.parse_args(argv)
    os.environ.setdefault("QATCORE_PROGRESS", "0")
    runtime.configure(seed=0)
    shown = inline_shell()
    results, missed = {}, []
    for notebook, build in builders().items():
        if args.only and notebook.split()[0] != args.only:
            continue
        rows = time_widget(build, args.repeats, shown)
        results[notebook] = rows
        for name, row in rows.items():
            target = RUN_TARGET_S if name.startswith("button") else REDRAW_TARGET_S
            if row is not None and row["median"] > target:
                missed.append(f"{notebook} {name}: {row['median']:.2f} s > {target} s")
            if row is not None and row.get("slowest", 0) > target:
                missed.append(
                    f"{notebook} {name} at {shown_as(row['at'])}: {row['slowest']:.2f} s > {target} s"
                )
    lines = [
        "# Widget response times",
        "",
        f"`bench/bench_widgets.py`: each control moved {args.repeats} times to a neighbouring value and back "
        f"(a Run button pressed {args.repeats} times); median seconds of the synchronous redraw, the figure's "
        "rendering to PNG by the inline backend included. Then each control's other settings (every "
        f"other option, a slider's two ends), each visited {args.repeats} times: the setting with the "
        "slowest median, and the slowest first visit (one-time work, reported, not judged). "
        f"{os.cpu_count()} cores, torch threads {runtime.thread_count()}, load average before the run "
        f"{[round(x, 2) for x in os.getloadavg()]}. Targets: Run ≤ {RUN_TARGET_S} s, every other redraw "
        f"≤ {REDRAW_TARGET_S} s.",
        "",
        "| notebook | control | median s | slowest other setting: median s | its slowest first visit s "
        "| target met |",
        "|---|---|---:|---|---:|---|",
    ]
    for notebook, rows in results.items():
        for name, row in rows.items():
            target = RUN_TARGET_S if name.startswith("button") else REDRAW_TARGET_S
            if row is None:
                lines.append(
                    f"| {notebook} | {name} | — | — | — | (sets what Run trains; draws nothing) |"
                )
                continue
            worst = max(row["median"], row.get("slowest", 0))
            setting = "—" if "at" not in row else f"{shown_as(row['at'])}: {row['slowest']:.3f}"
            first = f"{row['first']:.3f}" if "first" in row else "—"
            lines.append(
                f"| {notebook} | {name} | {row['median']:.3f} | {setting} | {first} "
                f"| {'yes' if worst <= target else 'no'} |"
            )
    lines += [
        "",
        f"Criterion: Run ≤ {RUN_TARGET_S} s, every other redraw ≤ {REDRAW_TARGET_S} s: "
        + (f"MISS ({'; '.join(missed)})" if missed else "PASS"),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.only:
        (RESULTS / "widgets.md").write_text(text, encoding="utf-8")
        (RESULTS / "widgets.json").write_text(
            json.dumps({"results": results, "missed": missed}, indent=2) + "\n"
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
