"""genlab's imports flow one way: every module imports only from its own layer's package or from lower layers.

The order: utils < config, results, cache, checkpoint, grid < data < nn, diffusion, metrics < models < runs < train
< judges < api, sample, translate, plot < export < evaluate < score < bench < cli < __main__. Imports
inside functions count too: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: list[tuple[str, ...]] = [
    ("utils",),
    ("config", "results", "cache", "checkpoint", "grid"),
    ("data",),
    ("nn", "diffusion", "metrics"),
    ("models",),
    ("runs",),
    ("train",),
    ("judges",),
    ("api", "sample", "translate", "plot"),
    ("export",),
    ("evaluate",),
    ("score",),
    ("bench",),
    ("cli",),
    ("__main__",),
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def unit_of(module: str, root: Path) -> str | None:
    """The layer unit of a dotted genlab module name: its first component below the package (None: the package)."""
    parts = module.split(".")
    if parts[0] != root.name or len(parts) == 1:
        return None
    return parts[1]


def imported_modules(tree: ast.AST, package_root: Path, module: str) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in a module, lazy ones included; `from genlab import x` gives
    genlab.x when x is a submodule."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = module.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            for alias in node.names:
                candidate = f"{name}.{alias.name}"
                path = package_root.parent / Path(*candidate.split("."))
                is_module = path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()
                found.append((node.lineno, candidate if is_module else name))
    return found


def layer_violations(package_root: Path, levels: dict[str, int]) -> list[str]:
    """Every import that goes up the layer order (or sideways into another unit of the same layer)."""
    problems = []
    for path in sorted(package_root.rglob("*.py")):
        relative = path.relative_to(package_root.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        source = unit_of(module, package_root)
        if source is None:
            continue  # the package's own __init__ is its public face, not a layer
        if source not in levels:
            problems.append(f"{path}: module unit {source!r} has no layer in the layer order")
            continue
        tree = ast.parse(path.read_text(), str(path))
        for line, imported in imported_modules(tree, package_root, module):
            target = unit_of(imported, package_root)
            if target is None or target == source:
                continue
            if target not in levels:
                problems.append(f"{path}:{line}: imports {imported}, whose unit {target!r} has no layer")
            elif levels[target] >= levels[source]:
                problems.append(
                    f"{path}:{line}: {module} imports {imported}, which is not below it "
                    f"(layer {levels[source]} {source!r} -> layer {levels[target]} {target!r})"
                )
    return problems


def test_genlab_imports_flow_one_way():
    problems = layer_violations(SRC / "genlab", LEVEL)
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


@pytest.fixture
def fixture_package(tmp_path):
    """A tiny package with a model layer that lazily imports its trainer: the arrow the test must catch."""
    root = tmp_path / "genlab"
    (root / "models").mkdir(parents=True)
    (root / "train").mkdir()
    (root / "__init__.py").write_text("")
    (root / "utils.py").write_text("import os\n")
    (root / "models" / "__init__.py").write_text("")
    (root / "train" / "__init__.py").write_text("")
    (root / "train" / "trainer.py").write_text("from genlab.models import base\nfrom genlab import utils\n")
    (root / "models" / "base.py").write_text(
        "from genlab.utils import os\n\n\ndef build():\n    from genlab.train.trainer import fit  # lazy, still up\n"
    )
    return root


def test_an_upward_import_is_found_and_named(fixture_package):
    problems = layer_violations(fixture_package, {"utils": 0, "models": 1, "train": 2})
    assert len(problems) == 1
    assert "models/base.py:5" in problems[0] and "genlab.train.trainer" in problems[0]


def test_a_sideways_import_between_units_of_one_layer_is_found(fixture_package):
    (fixture_package / "models" / "base.py").write_text("from genlab.train import trainer\n")
    problems = layer_violations(fixture_package, {"utils": 0, "models": 1, "train": 1})
    assert len(problems) == 2 and all("not below it" in problem for problem in problems)
    assert {"models/base.py:1", "train/trainer.py:1"} == {p.split(": ")[0].split("genlab/")[-1] for p in problems}


def test_every_unit_of_genlab_has_a_layer():
    units = {path.stem if path.is_file() else path.name for path in (SRC / "genlab").iterdir()}
    units -= {"__init__", "__pycache__", "py"}
    assert units <= set(LEVEL), f"add these to LAYERS: {sorted(units - set(LEVEL))}"


def import_cycles(package_root: Path) -> list[list[str]]:
    """The import circles among a package's modules (lazy imports included), each as its sorted module names:
    the strongly connected components of the import graph with more than one module. The package's own
    __init__ is left out, as in `layer_violations`: it is the public face that hands the top layers' names on."""
    graph: dict[str, set[str]] = {}
    for path in sorted(package_root.rglob("*.py")):
        module = ".".join(path.relative_to(package_root.parent).with_suffix("").parts).removesuffix(".__init__")
        if module == package_root.name:
            continue
        tree = ast.parse(path.read_text(), str(path))
        graph[module] = {name for _, name in imported_modules(tree, package_root, module)}
    for module in graph:
        graph[module] &= graph.keys() - {module}
    # Tarjan's algorithm, iterative over each module's successors.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(start: str) -> None:
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_no_module_of_genlab_imports_itself_in_a_circle():
    cycles = import_cycles(SRC / "genlab")
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(cycle) for cycle in cycles)


def test_an_import_circle_is_found(fixture_package):
    (fixture_package / "utils.py").write_text("def helper():\n    from genlab.train import trainer\n")
    # utils -> train.trainer -> models.base -> utils
    assert import_cycles(fixture_package) == [["genlab.models.base", "genlab.train.trainer", "genlab.utils"]]
