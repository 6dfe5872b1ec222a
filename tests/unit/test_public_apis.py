"""The package uses no private member of Lightning, torchmetrics, timm, torch or wandb (each release may change them).

An attribute or import whose name starts with one underscore is private to whoever defines it. Every such name the
package reads must therefore be one the package defines itself (a function, class, module or attribute it
assigns), or one of the documented underscore names of Python's namedtuple.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "avgk_lightning"
# namedtuple's public API: https://docs.python.org/3/library/collections.html#collections.namedtuple
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}
OTHER_LIBRARIES = ("lightning", "torchmetrics", "timm", "torch", "torchvision", "wandb", "jsonargparse")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _on_self(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")


def defined_names(trees: list[ast.AST]) -> set[str]:
    """The underscore names the package defines: functions, classes, modules, names and attributes of `self`."""
    names = {path.stem for path in PACKAGE.rglob("*.py")}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _on_self(node):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return {name for name in names if _private(name)}


def private_uses(tree: ast.AST, own: set[str], filename: str) -> list[str]:
    """`file:line name` for each private name of another library the module reads, writes or imports."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if node.attr not in own and node.attr not in NAMEDTUPLE_API:
                found.append(f"{filename}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in OTHER_LIBRARIES:
            if any(map(_private, node.module.split("."))):
                found.append(f"{filename}:{node.lineno} {node.module}")
            found += [f"{filename}:{node.lineno} {node.module}.{a.name}" for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Import):
            found += [
                f"{filename}:{node.lineno} {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] in OTHER_LIBRARIES and any(map(_private, alias.name.split(".")))
            ]
    return found


def test_the_package_reads_no_private_member_of_another_library():
    files = sorted(PACKAGE.rglob("*.py"))
    trees = {path: ast.parse(path.read_text(), filename=str(path)) for path in files}
    own = defined_names(list(trees.values()))
    found = [use for path, tree in trees.items() for use in private_uses(tree, own, str(path.relative_to(PACKAGE)))]
    assert found == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ("trainer._checkpoint_connector.restore()", ["m.py:1 ._checkpoint_connector"]),
        ("if logger._experiment is not None: pass", ["m.py:1 ._experiment"]),
        (
            "from lightning.pytorch.utilities._pytree import tree_flatten",
            ["m.py:1 lightning.pytorch.utilities._pytree"],
        ),
        ("from torchmetrics.utilities.data import _bincount", ["m.py:1 torchmetrics.utilities.data._bincount"]),
        ("import torch._dynamo", ["m.py:1 torch._dynamo"]),
        ("self._threshold = 1\nvalue = self._threshold", []),  # the package's own attribute
        ("self._trainer.fit()", ["m.py:1 ._trainer"]),  # a base class's private attribute
        ("logger._experiment = None", ["m.py:1 ._experiment"]),  # writing another object's private attribute
        ("batch._replace(images=None)", []),  # namedtuple's documented API
        ("from avgk_lightning.metrics import _topk_hits", []),  # the package's own private function
    ],
)
def test_the_check_finds_a_private_name_of_another_library(source, expected):
    tree = ast.parse(source)
    own = defined_names([tree]) | {"_topk_hits"}
    assert private_uses(tree, own, "m.py") == expected
