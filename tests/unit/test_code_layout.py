"""The package's shape: small classes and files, and imports that never run back up (an acyclic graph)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "avgk_lightning"
MAX_FILE_LINES, MAX_CLASS_LINES = 450, 250


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, ast.Module]:
    return {_module_name(path): ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))}


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def import_graph(sources: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its code (functions too), except for type checking."""
    graph = {name: set() for name in sources}
    for name, tree in sources.items():
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
                targets = [target if target in sources else node.module for target in targets]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            if not _in_type_checking(node, parents):
                graph[name] |= {target for target in targets if target in sources and target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] for an acyclic graph (depth-first search)."""
    state, stack = {}, []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_imports_inside_the_package_are_acyclic():
    assert find_cycle(import_graph(_sources())) == []


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import():
    sources = {
        "avgk_lightning.module": ast.parse("from avgk_lightning.callbacks import PseudoLabelThreshold"),
        "avgk_lightning.callbacks": ast.parse("def hook():\n    from avgk_lightning.module import TwoHeadModule"),
        "avgk_lightning.naming": ast.parse(
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from avgk_lightning.module import TwoHeadModule"
        ),
    }
    graph = import_graph(sources)
    assert graph["avgk_lightning.naming"] == set()  # for type checking only: no import at run time
    assert find_cycle(graph) == ["avgk_lightning.callbacks", "avgk_lightning.module", "avgk_lightning.callbacks"]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_files_and_classes_stay_small(path):
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_FILE_LINES
    tree = ast.parse(source)
    sizes = {node.name: node.end_lineno - node.lineno + 1 for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    assert {name: size for name, size in sizes.items() if size > MAX_CLASS_LINES} == {}
