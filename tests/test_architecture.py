"""The package's shape: ``espo/``'s import graph is acyclic and layered (every import counted: module level, in
functions and type-only), and ``DiffusionRL.training_step`` stays a short one-way pipeline."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "espo"


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The espo module an imported name lives in (``espo.a.b.C`` -> ``espo.a.b``), or None outside espo."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the espo modules it imports anywhere in its source (``if TYPE_CHECKING:`` blocks included).

    A package's ``__init__`` is not counted as a dependency of ``from espo.x import y`` when ``espo.x.y`` is a
    module, so re-exports alone do not make cycles; importing a name the ``__init__`` defines does count.
    """
    files = {_module_name(p, package.parent): p for p in package.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package_name = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package_name.split(".")
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != name:
                    edges.add(resolved)
        graph[name] = edges
    return graph


#: The layers, top to bottom: a package imports only packages of lower rows (docs/architecture.md). Packages
#: on one row are peers and never import each other (objectives never sample, samplers never score).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("espo.tools",),  # experiment tools drive whole runs through the entry point
    ("espo.cli",),
    ("espo.module",),
    ("espo.loops",),
    ("espo.train",),
    ("espo.callbacks",),
    ("espo.objectives", "espo.sampling", "espo.tasks", "espo.scale"),
    ("espo.rewards",),
    ("espo.models",),
    ("espo.rng",),
)
#: Outside the layers: the package root and the finder that serves old module paths.
UNLAYERED = ("espo", "espo._moved")


def layer_of(module: str) -> tuple[int, str] | None:
    """(row, package) of an espo module, or None for the unlayered root modules."""
    for row, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                return row, package
    return None


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """``importer -> imported`` for every edge that goes up a layer or across to a peer package."""
    bad = []
    for module, targets in graph.items():
        if module in UNLAYERED:
            continue
        row, package = layer_of(module) or (None, None)
        assert row is not None, f"{module} is in no layer: add its package to LAYERS"
        for target in sorted(targets):
            if target in UNLAYERED:
                continue
            target_row, target_package = layer_of(target) or (None, None)
            if target_package != package and target_row <= row:
                bad.append(f"{module} -> {target}")
    return bad


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_a_type_only_cycle(tmp_path: Path):
    pkg = tmp_path / "espo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from espo.b import B\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from espo.a import A\n")
    (pkg / "c.py").write_text("def f():\n    from espo import a\n")
    graph = import_graph(pkg)
    assert graph["espo.a"] == {"espo.b"} and graph["espo.b"] == {"espo.a"} and graph["espo.c"] == {"espo.a"}
    assert find_cycle(graph) == ["espo.a", "espo.b", "espo.a"]
    (pkg / "b.py").write_text("B = 1\n")
    assert find_cycle(import_graph(pkg)) is None


def test_espo_has_no_import_cycle():
    graph = import_graph()
    assert "espo.module" in graph and graph["espo.module"]  # the graph really was built
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_every_import_goes_down_a_layer():
    assert layering_violations(import_graph()) == []


def test_the_layering_rule_refuses_an_upward_and_a_peer_import():
    graph = {"espo.models.llada": {"espo.train.rollout"}, "espo.objectives.espo": {"espo.sampling.engine"},
             "espo.train.rollout": {"espo.models.llada", "espo.train.tokens"}}
    assert layering_violations(graph) == ["espo.models.llada -> espo.train.rollout",
                                          "espo.objectives.espo -> espo.sampling.engine"]


def test_training_step_is_a_short_one_way_pipeline():
    tree = ast.parse((PACKAGE / "module.py").read_text(encoding="utf-8"))
    step = next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "training_step")
    assert step.end_lineno - step.lineno + 1 <= 15
    called = {node.func.id for node in ast.walk(step) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert {"roll_out", "update"} <= called  # prompts -> rollout -> update -> log
