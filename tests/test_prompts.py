"""Every value a notebook's prediction prompt asks the reader to try is one its widget's controls can reach.

Each prompt's settings are read from the notebook's markdown (``control = value``, ``qatcore.course.prompts``);
the controls from the dashboard itself, built by the same builder the notebook calls, with its drawing left
out (no training, no export: the ranges and options are what matter)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import ipywidgets as widgets
import nbformat
import pytest

from qatcore.course import prompts

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
#: where the dashboards live: each paper's widgets and the export's
WIDGET_MODULES = (
    "qatcore.estimators.widgets",
    "qatcore.cost.widgets",
    "qatcore.bnn.widgets",
    "qatcore.export.widgets",
)


def _no_drawing(controls, view):
    return widgets.VBox([widgets.HBox(controls)])


def controls_of(builder: str, monkeypatch) -> list[widgets.Widget]:
    """The controls of the dashboard ``builder`` builds, found in the widget modules and built with its
    defaults (``None`` for a model or data it needs only to draw) and its drawing replaced by nothing."""
    for name in WIDGET_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, builder):
            break
    else:
        raise AssertionError(f"no widget module defines {builder}")
    if hasattr(module, "live_view"):
        monkeypatch.setattr(module, "live_view", _no_drawing)
    # a dashboard that draws once as it is built draws nothing
    for attribute, value in vars(module).copy().items():
        if attribute.endswith("_view") and inspect.isfunction(value) and attribute != "live_view":
            monkeypatch.setattr(module, attribute, lambda *args, **kwargs: ("", None))
    if hasattr(module, "display"):
        monkeypatch.setattr(module, "display", lambda *args, **kwargs: None)
    build = getattr(module, builder)
    required = [
        p
        for p in inspect.signature(build).parameters.values()
        if p.default is inspect.Parameter.empty
    ]
    box = build(*(None for _ in required))
    return [w for w in _walk(box) if getattr(w, "description", "") and hasattr(w, "value")]


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def _cases():
    for path in NOTEBOOKS:
        for prompt in prompts.prompts(nbformat.read(path, as_version=4)):
            yield pytest.param(path, prompt, id=f"{path.stem[:2]}-cell{prompt.cell}")


@pytest.mark.parametrize(("path", "prompt"), list(_cases()))
def test_every_requested_value_is_reachable_with_the_widgets_controls(path, prompt, monkeypatch):
    assert prompt.builder is not None, (
        f"{path.name}: the prompt of cell {prompt.cell} has no widget after it"
    )
    assert prompt.answer, f"{path.name}: the prompt of cell {prompt.cell} has no answer"
    controls = controls_of(prompt.builder, monkeypatch)
    assert controls, prompt.builder
    assert prompts.problems(prompt, controls) == [], f"{path.name}, cell {prompt.cell}"


def test_the_course_has_a_prompt_for_every_widget():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        calls = {
            index
            for index, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and prompts.BUILDER.search(cell.source)
        }
        asked = {
            next(i for i in sorted(calls) if i > p.cell) for p in prompts.prompts(nb) if p.builder
        }
        assert asked == calls, (
            f"{path.name}: widgets without a prompt in cells {sorted(calls - asked)}"
        )


def test_the_settings_are_read_as_written():
    text = (
        "Raise `η` tenfold, to `η = 10⁻²`, then `η = 2·10⁻³`; set `lr = 1e-3` and `bits = 4`, pick "
        "`estimator = approx_sign`; `Q̂′ = 1` is a formula and `x` a symbol."
    )
    assert prompts.requests(text) == [
        ("η", 0.01),
        ("η", 0.002),
        ("lr", 0.001),
        ("bits", 4.0),
        ("estimator", "approx_sign"),
        ("Q̂′", 1.0),
    ]


def test_planted_unreachable_requests_are_found():
    bits = widgets.IntSlider(value=2, min=1, max=8, description="bits")
    sharp = widgets.FloatSlider(value=6.5, min=0.5, max=20, step=0.5, description="sharpness")
    # stops at 0.1, as notebook 02's rate slider once did
    rate = widgets.FloatLogSlider(value=0.02, base=10, min=-4, max=-1, description="lr")
    kind = widgets.Dropdown(options=["dsq", "ste"], value="dsq", description="estimator")
    steps = widgets.SelectionSlider(options=(2, 4, 8, 16, 32), value=32, description="element-wise")
    box = widgets.Checkbox(value=False, description="DHQ")
    controls = [bits, sharp, rate, kind, steps, box]
    fine = [
        ("bits", 8.0),
        ("sharpness", 15.0),
        ("lr", 0.02),
        ("lr", 0.1),
        ("estimator", "ste"),
        ("element-wise", 16.0),
        ("DHQ", "True"),
    ]
    assert prompts.unreachable(fine, controls) == []
    planted = [
        ("bits", 9.0),  # past the slider's end
        ("sharpness", 15.25),  # between its steps
        ("lr", 0.2),  # notebook 02's tenfold rate once, beyond a slider that stopped at 0.1
        ("estimator", "ewgs"),  # not on the menu
        ("element-wise", 6.0),  # not one of the slider's positions
        ("learning rate", 0.01),  # no control has that label
    ]
    found = prompts.unreachable(planted, controls)
    assert len(found) == len(planted), found
    for (name, value), line in zip(planted, found, strict=True):
        assert line.startswith(f"`{name} = {value}`"), line
    assert "no control is labelled 'learning rate'" in found[-1]


def test_planted_prompts_are_found_wanting(tmp_path):
    rate = widgets.FloatLogSlider(value=0.02, base=10, min=-4, max=-1, description="lr")
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell(
                "**Predict first.** Before you press Run: raise the learning rate tenfold. Which pair falls more?"
                "\n\n<details><summary>After you have tried it</summary>\n\nAt `lr = 0.5` it is lost.\n\n</details>"
            ),
            nbformat.v4.new_code_cell("equivalence_explorer(dataset)"),
            nbformat.v4.new_markdown_cell(
                "**Predict first.** Raise it tenfold, to `lr = 0.2`: what happens?"
                "\n\n<details><summary>After you have tried it</summary>\n\n`M′ = α/Q̂′` explains it.\n\n</details>"
            ),
            nbformat.v4.new_code_cell("equivalence_explorer(dataset)"),
        ]
    )
    first, second = prompts.prompts(nb)
    assert first.builder == second.builder == "equivalence_explorer"
    wrong = prompts.problems(first, [rate])
    assert any("without its value" in line and "tenfold" in line for line in wrong), wrong
    assert any(line.startswith("`lr = 0.5`") for line in wrong), (
        "the answer's suggestion is checked too"
    )
    assert prompts.problems(second, [rate]) == [
        "`lr = 0.2`: 'lr' cannot be set to 0.2 (10^-4 to 10^-1, exponent steps of 0.1)"
    ]
