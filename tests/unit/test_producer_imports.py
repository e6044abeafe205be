"""The SDK's modules import each other as a DAG, and ``ingest`` uses only its public names.

Imports are read from the source with ``ast``: module-level and function-local ones alike,
so a cycle hidden inside a function still counts. For the DAG only imports under
``if TYPE_CHECKING:`` are left out (annotations, never executed); ``ingest`` may not name
a private module of the SDK even there (``imports_of``, tests/unit/test_layout.py).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

import producer
from tests.unit.test_layout import ROOT, imports_of, module_name


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking_only(child):
            for other in child.orelse:
                yield from _runtime_import_nodes(other)
            continue
        yield from _runtime_import_nodes(child)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module ``module`` imports when it runs (``from x import y`` also counts x.y),
    wherever the statement stands, but not under ``if TYPE_CHECKING:``."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_import_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        found.add(base)
        found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def producer_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in (ROOT / "producer").glob("*.py")}
    return {
        name: imported_modules(path.read_text(), name, is_package=path.name == "__init__.py")
        & set(paths)
        for name, path in paths.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its modules in import order), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_producer_modules_form_a_dag() -> None:
    graph = producer_graph()
    assert {"producer._workspace", "producer._run", "producer._session"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_a_function_local_import_closing_a_cycle_is_found() -> None:
    run = "from ._session import Session\n"
    session = "def later():\n    from ._run import RunHandle\n"
    annotations = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._run import X\n"
    graph = {
        "producer._run": imported_modules(run, "producer._run"),
        "producer._session": imported_modules(session, "producer._session"),
        "producer._reads": imported_modules(annotations, "producer._reads"),
    }
    assert find_cycle(graph) == ["producer._run", "producer._session", "producer._run"]
    assert "producer._run" not in graph["producer._reads"]  # TYPE_CHECKING is not run


def test_ingest_imports_only_public_producer_names() -> None:
    private = {
        module_name(path): sorted(
            name for name in imports_of(path) if name.startswith("producer._")
        )
        for path in sorted((ROOT / "ingest").rglob("*.py"))
    }
    assert {module: names for module, names in private.items() if names} == {}
    assert set(private) >= {"ingest.settings", "ingest.worker.consumer", "ingest.cli.main"}


def test_the_public_names_are_a_short_sorted_list() -> None:
    assert producer.__all__ == sorted(producer.__all__)
    assert all(getattr(producer, name) is not None for name in producer.__all__)
    assert "Settings" not in producer.__all__  # EnvReader reads settings; no second name
