"""The house rules of the layout (ingest/__init__.py): which room may import which.

Imports are read with ``ast`` (function-local ones too), so a rule cannot be dodged by
importing inside a function.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("producer", "ingest", "schemas")

#: room → rooms of ingest it must not import (lower rooms never reach up).
#: The agent (``ingest.agent``) talks to the API over HTTP only: it reaches no database,
#: worker or API code, and only the command line (``runstream agent``) imports it; the
#: stack starts it as a process.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "ingest.db": ("ingest.worker", "ingest.api", "ingest.cli", "ingest.bench", "ingest.stack",
                  "ingest.agent"),
    "ingest.worker": ("ingest.api", "ingest.cli", "ingest.bench", "ingest.stack",
                      "ingest.agent"),
    "ingest.api": ("ingest.worker", "ingest.cli", "ingest.bench", "ingest.stack",
                   "ingest.agent"),
    "ingest.stack": ("ingest.worker", "ingest.api", "ingest.cli", "ingest.bench",
                     "ingest.agent"),
    "ingest.agent": ("ingest.db", "ingest.worker", "ingest.api", "ingest.cli", "ingest.bench",
                     "ingest.stack"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute, wherever the import statement stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return found


def product_modules() -> list[Path]:
    return sorted(p for top in PRODUCT for p in (ROOT / top).rglob("*.py"))


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_rooms_only_import_downwards(room: str) -> None:
    crossings = [
        f"{module_name(p)} imports {name}"
        for p in product_modules()
        if module_name(p).startswith(room + ".") or module_name(p) == room
        for name in sorted(imports_of(p))
        if name.startswith(FORBIDDEN[room])
    ]
    assert crossings == []


def test_no_product_module_imports_the_tests() -> None:
    crossings = [
        f"{module_name(p)} imports {name}"
        for p in product_modules()
        for name in sorted(imports_of(p))
        if name == "tests" or name.startswith("tests.")
    ]
    assert crossings == []


def test_the_sdk_never_imports_the_server() -> None:
    crossings = [
        f"{module_name(p)} imports {name}"
        for p in (ROOT / "producer").rglob("*.py")
        for name in sorted(imports_of(p))
        if name.split(".")[0] == "ingest"
    ]
    assert crossings == []


def test_the_command_line_loads_no_server_component_until_a_command_needs_it() -> None:
    """``runstream --help``/``sync`` work with the SDK alone; ``status`` loads no worker."""
    heavy = ("aiohttp", "prometheus_client", "psutil", "asyncpg", "ingest.worker", "ingest.api.app",
             "ingest.agent")
    code = (
        "import sys, ingest.cli.main\n"
        f"print('\\n'.join(m for m in sys.modules if m.startswith({heavy!r})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert loaded == []


def test_the_agents_watchdog_starts_on_the_standard_library_alone() -> None:
    """``python -m ingest.agent.watchdog`` must start fast and cannot fail on an import."""
    done = subprocess.run([sys.executable, "-m", "ingest.agent.watchdog"], cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, b"")
    imported = imports_of(ROOT / "ingest" / "agent" / "watchdog.py")
    assert {name.split(".")[0] for name in imported} <= {"__future__", "contextlib", "os",
                                                          "signal", "sys"}
    assert imports_of(ROOT / "ingest" / "agent" / "__init__.py") == set()
