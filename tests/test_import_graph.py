"""The import graph of `runcycles/` has no cycle, and every module imports on its own.

The graph counts every ``runcycles`` import, at module level or inside a function, except those under
``if TYPE_CHECKING:``. ``from package import name`` is an edge to the submodule ``package.name`` when there is
one, else to the package (its ``__init__``); the implicit import of a module's parent packages is not an edge.
The lazy ``__getattr__`` of ``runcycles/__init__.py`` uses ``importlib`` and is not an import. The embedded
server (``runcycles.local``) is left out: it is a program of its own beside the client.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "runcycles"
EXCLUDED = ("runcycles.local",)


def _modules(package: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, outside ``if TYPE_CHECKING:`` bodies."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for other in node.orelse:
                yield from _imports(ast.Module(body=[other], type_ignores=[]))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    root = module.split(".")[0]
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name.split(".")[0] == root}
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source.split(".")[0] != root:
        return set()
    return {f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source for alias in node.names}


def import_graph(package: Path, excluded: tuple[str, ...] = ()) -> dict[str, set[str]]:
    """module -> the package modules it imports (see the module docstring for what counts)."""
    modules = _modules(package)
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        if module.startswith(excluded):
            continue
        tree = ast.parse(path.read_text("utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in _imports(tree):
            edges |= _targets(module, path.name == "__init__.py", node, known)
        graph[module] = {t for t in edges if t in known and t != module and not t.startswith(excluded)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_inside_runcycles() -> None:
    graph = import_graph(PACKAGE, EXCLUDED)
    assert len(graph) > 50  # the walk found the package
    assert cycles(graph) == []


def test_the_client_does_not_import_the_lifecycle_runtime() -> None:
    graph = import_graph(PACKAGE, EXCLUDED)
    assert "runcycles._runtime" not in graph["runcycles.client"]
    assert "runcycles.client" in graph["runcycles._runtime"]  # the lifecycle sits above the client


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
    return root / "pkg"


def test_the_check_sees_function_level_imports_and_ignores_type_checking_ones(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "def f():\n    from . import b\n",
            "pkg/b.py": "from .sub import thing\n",
            "pkg/sub/__init__.py": "from .c import thing\n",
            "pkg/sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import a\nthing = 1\n",
            "pkg/d.py": "import pkg.e\n",
            "pkg/e.py": "from pkg import d\n",
        },
    )
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub"}  # `thing` is no submodule: the edge goes to the package
    assert graph["pkg.sub.c"] == set()  # TYPE_CHECKING only
    assert cycles(graph) == [["pkg.d", "pkg.e"]]


def test_the_check_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {"pkg/__init__.py": "", "pkg/a.py": "from . import b\n", "pkg/b.py": "def g():\n    from .a import x\n"},
    )
    assert cycles(import_graph(package)) == [["pkg.a", "pkg.b"]]


# Each module is imported with no `runcycles` module loaded before it (third-party packages stay loaded);
# two interpreters share the list.
IMPORT_EACH = """
import importlib, json, sys, traceback
failed = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "runcycles" or m.startswith("runcycles.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc()
print(json.dumps(failed))
"""


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    names = [name for name in _modules(PACKAGE) if not name.endswith("__main__")]
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", IMPORT_EACH, json.dumps(names[half::2])],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for half in (0, 1)
    ]
    failed: dict[str, str] = {}
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        failed.update(json.loads(out.strip().splitlines()[-1]))
    assert failed == {}
