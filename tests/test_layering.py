"""The packages depend one way: library code never imports the command line, the torch-free
side never imports the profiler, and the workload modules import each other without a cycle.

Read from the source (every import statement, function-level ones included), so a lazy import
cannot hide a dependency; `TYPE_CHECKING` blocks are type-only and allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ("sim", "policies", "profiler", "reports", "serve")  # the folders batchsim/ links
# the command line: the modules of batchsim/ itself (the linked folders are the library)
CLI = {f"batchsim.{p.stem}" for p in (ROOT / "batchsim").glob("*.py") if p.stem != "__init__"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["batchsim", *parts])


def _runtime_imports(path: Path) -> set[str]:
    """Every module named by an import in the file, outside `if TYPE_CHECKING:` blocks
    (`from a import b` names both a and a.b: b may be a module)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                names.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                names.add(child.module)
                names.update(f"{child.module}.{a.name}" for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return names


def _library_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _library_files(*LIBRARY), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_code_does_not_import_the_command_line(path):
    assert {"batchsim.cli", "batchsim.progress", "batchsim.args"} <= CLI  # the rule has teeth
    used = _runtime_imports(path) & CLI
    assert not used, f"{path.relative_to(ROOT)} imports the CLI module(s) {sorted(used)}"


@pytest.mark.parametrize("path", _library_files("sim", "policies", "reports"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_the_torch_free_side_does_not_import_the_profiler(path):
    used = sorted(m for m in _runtime_imports(path) if m.startswith("batchsim.profiler"))
    assert not used, f"{path.relative_to(ROOT)} imports {used}: the dependency runs profiler -> sim"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    return found


def test_no_import_cycles_in_sim_profiler_reports_and_the_cli():
    """(policies/ is left out: its registry <-> policy modules cycle is being broken apart.)"""
    files = _library_files("sim", "profiler", "reports") + sorted((ROOT / "batchsim").glob("*.py"))
    modules = {_module(p) if p.parent.name != "batchsim" else f"batchsim.{p.stem}": p
               for p in files}
    modules.pop("batchsim.__init__", None)
    graph = {m: (_runtime_imports(p) & set(modules)) - {m} for m, p in modules.items()}
    assert graph["batchsim.sim.workload.traces"], "the graph was built"
    assert _cycles(graph) == []
