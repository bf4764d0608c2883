"""The layout holds: the stage contract (import-linter), no import cycles, and every package folder shipped.

import-linter and grimp read a package from one directory, while tasks/, sandbox/, suites/ and
reports/ live beside harness/ in the checkout; so the package is staged as the wheel lays it out
(from pyproject's package-dir mapping) and checked there.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

from tests.conftest import REPO

PYPROJECT = REPO / "pyproject.toml"
SETUPTOOLS = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]


def source_dir(package: str) -> Path:
    """Where a package's files are in the checkout, by pyproject's package-dir mapping."""
    mapping = SETUPTOOLS["package-dir"]
    parts = package.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in mapping:
            return REPO / mapping[prefix] / Path(*parts[n:])
    raise AssertionError(f"{package} is not under any package-dir entry")


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("staged")
    for package in SETUPTOOLS["packages"]:
        dest = root / Path(*package.split("."))
        dest.mkdir(parents=True, exist_ok=True)
        for module in source_dir(package).glob("*.py"):
            shutil.copyfile(module, dest / module.name)
    return root


def test_every_package_folder_is_shipped() -> None:
    listed = {source_dir(p).resolve() for p in SETUPTOOLS["packages"]}
    folders = {init.parent.resolve() for top in ("harness", "tasks", "sandbox", "suites", "recipes", "reports")
               for init in (REPO / top).rglob("__init__.py") if "__pycache__" not in init.parts}
    assert folders - listed == set(), "add these packages to [tool.setuptools] packages in pyproject.toml"
    assert listed - folders == set(), "these listed packages have no __init__.py"


def test_sandbox_image_builder_is_stdlib_only() -> None:
    """.ci/run runs `python3 sandbox/image.py` with the system python, before any virtualenv exists."""
    import ast

    tree = ast.parse((REPO / "sandbox" / "image.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported and imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)
    assert "sandbox/image.py --method import" in (REPO / ".ci" / "run").read_text()


def test_stage_contract_holds(staged: Path, monkeypatch) -> None:
    from importlinter.cli import lint_imports

    monkeypatch.chdir(staged)
    monkeypatch.syspath_prepend(str(staged))
    for name in [m for m in sys.modules if m == "harness" or m.startswith("harness.")]:
        monkeypatch.delitem(sys.modules, name)  # grimp must find the staged copy, not the checkout
    assert lint_imports(config_filename=str(PYPROJECT), no_cache=True) == 0


def test_no_import_cycles(staged: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(staged))
    for name in [m for m in sys.modules if m == "harness" or m.startswith("harness.")]:
        monkeypatch.delitem(sys.modules, name)
    graph = grimp.build_graph("harness", cache_dir=None)
    modules = sorted(graph.modules)
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in graph.modules} for m in modules}
    assert len(modules) > 100 and sum(map(len, edges.values())) > 250  # the whole package was read
    cycles = strongly_connected(edges)
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def test_cycle_finder_finds_cycles() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm; the components with more than one module (a module importing its own
    package's __init__ is not a cycle of ours: packages here re-export nothing they import back)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges) + 100))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in edges:
        if v not in index:
            visit(v)
    return out
