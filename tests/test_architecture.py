"""The step's shape: ``espo/``'s import graph is acyclic (every import counted: module level, in functions and
type-only) and ``DiffusionRL.training_step`` stays a short one-way pipeline."""

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


def test_training_step_is_a_short_one_way_pipeline():
    tree = ast.parse((PACKAGE / "module.py").read_text(encoding="utf-8"))
    step = next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "training_step")
    assert step.end_lineno - step.lineno + 1 <= 15
    called = {node.func.id for node in ast.walk(step) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert {"roll_out", "update"} <= called  # prompts -> rollout -> update -> log
