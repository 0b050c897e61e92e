"""The package's architecture, read from its import statements (parsed with ast, nothing imported).

Five layers, from the ground up (CONTRIBUTING.md and ``qatcore/__init__`` say the same):

1. core: quantizers, checks, runtime, files, optimizers, palette, live, data/, architectures, … —
   everything not named below;
2. papers: ``estimators`` (paper 1), ``cost`` (paper 2, whose PikeLPN layers train with paper 1's
   estimators), ``bnn`` (paper 3);
3. ``export``;
4. models: ``zoo``, ``checkpoint``, ``training``;
5. the course: ``course/``, ``cli``, ``__main__``.

An import goes to its own layer or one below, never up: no exceptions. A ``"qatcore.module:factory"``
string (the zoo's entries) counts as an import of that module. Within the papers, a paper imports
only itself and the papers it builds on. No module reaches into another's private names, and no
chain of imports (deferred ones inside functions included) comes back to its start.
"""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "qatcore"
LAYERS = ("core", "papers", "export", "models", "course")
PAPERS = ("qatcore.estimators", "qatcore.cost", "qatcore.bnn")
#: the papers another paper builds on: paper 2's PikeLPN layers train with paper 1's estimators
BUILDS_ON = {"qatcore.estimators": (), "qatcore.cost": ("qatcore.estimators",), "qatcore.bnn": ()}
#: the layers above the core, by module or package
ABOVE_THE_CORE = {
    **dict.fromkeys(PAPERS, "papers"),
    "qatcore.export": "export",
    "qatcore.zoo": "models",
    "qatcore.checkpoint": "models",
    "qatcore.training": "models",
    "qatcore.course": "course",
    "qatcore.cli": "course",
    "qatcore.__main__": "course",
}
#: libraries only figures, dashboards and the live view may import
DISPLAY_LIBRARIES = {"matplotlib", "ipywidgets", "IPython"}
#: a factory named in a string: ``"qatcore.bnn.models:BNNMLP"``
FACTORY = re.compile(r"^(qatcore(?:\.\w+)+):\w+$")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
SOURCES = {module: path.read_text(encoding="utf-8") for module, path in MODULES.items()}


def layer(module: str) -> str:
    """The layer of ``module``: one of ``LAYERS``."""
    for prefix, name in ABOVE_THE_CORE.items():
        if module == prefix or module.startswith(prefix + "."):
            return name
    return "core"


def paper_of(module: str) -> str | None:
    return next((p for p in PAPERS if module == p or module.startswith(p + ".")), None)


def imports(module: str, sources: dict[str, str] = SOURCES) -> list[tuple[str, list[str], int]]:
    """``(qatcore module imported, names taken from it, line)`` for every import statement of
    ``module``, at any depth, and every ``"qatcore.module:factory"`` string; ``from pkg import sub``
    counts as importing the submodule."""
    tree = ast.parse(sources[module])
    is_package = module in MODULES and MODULES[module].name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "qatcore":
                    found.append((_known(alias.name), [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            found += _from_import(node, package)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and (factory := FACTORY.match(node.value))
        ):
            found.append((_known(factory.group(1)), [], node.lineno))
    return found


def _from_import(node: ast.ImportFrom, package: str) -> list[tuple[str, list[str], int]]:
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    if base.split(".")[0] != "qatcore":
        return []
    found = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in MODULES:
            found.append((sub, [], node.lineno))
        else:
            found.append((_known(base), [alias.name], node.lineno))
    return found


def _known(name: str) -> str:
    """The longest prefix of ``name`` that is a qatcore module."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def third_party(module: str) -> set[str]:
    tree = ast.parse(SOURCES[module])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def violations(rule, sources: dict[str, str] = SOURCES) -> list[str]:
    return [
        f"{module}:{line} imports {target}"
        for module in sources
        for target, _, line in imports(module, sources)
        if target != module and not rule(module, target)
    ]


def downward(module: str, target: str) -> bool:
    """The one rule: an import stays in its layer or goes down; between papers, only to those
    the importing paper builds on."""
    here, there = LAYERS.index(layer(module)), LAYERS.index(layer(target))
    if there > here:
        return False
    if here == there and layer(module) == "papers":
        return paper_of(target) in (paper_of(module), *BUILDS_ON[paper_of(module)])
    return True


def test_the_tree_is_a_core_three_papers_export_models_and_the_course():
    top_level = {path.name for path in PACKAGE.glob("*.py")}
    assert not {name for name in top_level if name.endswith(("_plots.py", "_widgets.py"))}
    assert not top_level & {"plots.py", "widgets.py"}, (
        "figures and dashboards live in their paper's package"
    )
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert packages == {"data", "estimators", "cost", "bnn", "export", "course"}
    for paper in PAPERS:
        assert {f"{paper}.plots", f"{paper}.widgets"} <= set(MODULES)
    assert {layer(m) for m in MODULES} == set(LAYERS)
    assert set(ABOVE_THE_CORE) <= set(MODULES), "a layer names a module that is gone"


def test_every_import_goes_down_the_layers():
    assert violations(downward) == []


def test_the_layers_are_described_the_same_way_everywhere():
    """``qatcore/__init__`` and CONTRIBUTING.md name the five layers in this order."""
    words = ("core", "papers", "export", "models", "course")
    for text in (SOURCES["qatcore"], (PACKAGE.parent / "CONTRIBUTING.md").read_text("utf-8")):
        places = [text.lower().index(f"{n}. **{w}") for n, w in enumerate(words, 1)]
        assert places == sorted(places)


def test_an_upward_import_or_factory_string_is_found():
    """Planted violations are reported: a core module importing a paper, a paper importing the zoo,
    export importing a checkpoint inside a function, and the zoo naming a course factory."""
    planted = {
        "qatcore.quantizers": "from qatcore.bnn import layers\n",
        "qatcore.bnn.measure": "def f():\n    from qatcore import zoo\n",
        "qatcore.export.exporter": "def g():\n    import qatcore.checkpoint\n",
        "qatcore.zoo": 'MODELS = {"bnn_mlp": "qatcore.bnn.models:BNNMLP", "x": "qatcore.cli:main"}\n',
        "qatcore.cost.ace": "from qatcore.bnn.layers import BinaryLinear\n",
        "qatcore.cost.pikelpn": "from qatcore.estimators.train import train\n",
    }
    assert sorted(violations(downward, planted)) == [
        "qatcore.bnn.measure:2 imports qatcore.zoo",
        "qatcore.cost.ace:1 imports qatcore.bnn.layers",
        "qatcore.export.exporter:2 imports qatcore.checkpoint",
        "qatcore.quantizers:1 imports qatcore.bnn.layers",
        "qatcore.zoo:1 imports qatcore.cli",
    ]


def test_counting_and_export_read_bit_widths_through_the_protocol():
    """``qatcore.cost.ace`` and ``qatcore.export.ops`` know a quantized layer only by
    ``qatcore.quantized.QuantizedLayer``, never by importing the estimators."""
    for module in ("qatcore.cost.ace", "qatcore.export.ops"):
        targets = {t for t, _, _ in imports(module)}
        assert not {t for t in targets if paper_of(t) == "qatcore.estimators"}, module
    assert "qatcore.quantized" in {t for t, _, _ in imports("qatcore.export.ops")}


def test_only_dashboards_import_dashboards_and_only_figures_and_dashboards_import_figures():
    def kind(module: str) -> str:
        return module.rpartition(".")[2]

    def allowed(module: str, target: str) -> bool:
        if kind(target) == "widgets":  # and each package's dashboards stand on their own
            return (
                kind(module) == "widgets" and target.rpartition(".")[0] == module.rpartition(".")[0]
            )
        if kind(target) == "plots":
            return kind(module) in ("plots", "widgets")
        return True

    assert violations(allowed) == []
    logic_with_display = {
        m: sorted(third_party(m) & DISPLAY_LIBRARIES)
        for m in MODULES
        if kind(m) not in ("plots", "widgets", "live") and third_party(m) & DISPLAY_LIBRARIES
    }
    assert logic_with_display == {}


def test_no_module_uses_another_modules_private_names():
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bound = {}  # local name -> qatcore module it stands for
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.split(".")[0] == "qatcore"
            ):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{module}:{node.lineno} imports {node.module}.{alias.name}")
                    if f"{node.module}.{alias.name}" in MODULES:
                        bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in bound
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{module}:{node.lineno} uses {bound[node.value.id]}.{node.attr}")
    assert found == []


def find_cycles(graph: dict[str, list[str]]) -> list[str]:
    """Every back edge of a depth-first walk of ``graph``, as the cycle it closes."""
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in graph.get(node, []):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycle():
    assert find_cycles({m: sorted({t for t, _, _ in imports(m) if t != m}) for m in MODULES}) == []


def test_the_checks_see_what_they_claim():
    """A cycle made by hand is found; deferred and ``from pkg import sub`` imports are resolved."""
    assert find_cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == ["a -> b -> c -> a"]
    assert find_cycles({"a": ["b"], "b": [], "c": ["a", "b"]}) == []
    graph_imports = {t for t, _, _ in imports("qatcore.export.graph")}
    assert {
        "qatcore.export.ops",
        "qatcore.export.binary",
        "qatcore.estimators.layers",
    } <= graph_imports
    assert "qatcore.export.graph" not in {t for t, _, _ in imports("qatcore.export.binary")}
    assert "qatcore.cost.ace" in {
        t for t, _, _ in imports("qatcore.export.metadata")
    }  # inside a function
    assert layer("qatcore.cost.plots") == "papers" and layer("qatcore.data.image_folder") == "core"
    assert layer("qatcore.live") == "core" and layer("qatcore.training") == "models"


def test_every_choice_is_checked_by_the_one_helper():
    """The words "must be one of" are written once, in ``qatcore.checks.check_choice`` (a cost model may
    also be given as an object, which that message says)."""
    offenders = [
        f"{name}:{number}"
        for name, path in MODULES.items()
        if name != "qatcore.checks"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "must be one of" in line and "or a CostModel" not in line
    ]
    assert not offenders, f"check choices with qatcore.checks.check_choice: {offenders}"


def string_tuples(module: str) -> dict[str, tuple[str, ...]]:
    """The module-level constants of ``module`` that are tuples of two or more strings, by name."""
    found = {}
    for node in ast.parse(MODULES[module].read_text(encoding="utf-8")).body:
        target = (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        )
        if (
            isinstance(target, ast.Name)
            and isinstance(node.value, ast.Tuple)
            and len(node.value.elts) >= 2
            and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.value.elts
            )
        ):
            found[target.id] = tuple(e.value for e in node.value.elts)
    return found


def test_each_list_of_names_is_defined_once():
    """The same tuple of names (optimizers, modes, formats …) is written in one module; others import it."""
    where: dict[tuple[str, ...], list[str]] = {}
    for module in MODULES:
        for name, names in string_tuples(module).items():
            where.setdefault(tuple(sorted(names)), []).append(f"{module}.{name}")
    repeated = {names: places for names, places in where.items() if len(places) > 1}
    assert not repeated, f"define each list of names once and import it: {repeated}"
