"""Import order must not matter: the dashboard's sessions are threads that import pages at once.

CPython takes a module's import lock before it imports the module's parent package, so a package
whose `__init__` imports its own submodules deadlocks (or hands out a partially initialised module)
when one thread imports the package while another imports the submodule. The engine's import graph,
parent-package edges included, must therefore be acyclic.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in (ROOT / "assft_core").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _module_level_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Engine modules `name` imports while it is executed (function bodies and TYPE_CHECKING
    blocks excluded), plus its parent package (imported first by CPython)."""
    found: set[str] = set()
    stack: list[ast.AST] = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or _is_type_checking(node):
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
        else:
            stack.extend(ast.iter_child_nodes(node))
    deps: set[str] = set()
    for dotted in found:
        parts = dotted.split(".")
        deps.update(".".join(parts[:i]) for i in range(2, len(parts) + 1) if ".".join(parts[:i]) in modules)
    parent = name.rpartition(".")[0]
    if parent in modules:
        deps.add(parent)
    deps.discard(name)
    return deps


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_engine_has_no_import_cycle_even_through_package_inits() -> None:
    modules = _modules()
    graph = {name: _module_level_imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []


CONCURRENT = textwrap.dedent(
    """
    import sys, threading, traceback
    sys.path.insert(0, {root!r})
    barrier = threading.Barrier(3)
    errors = []

    def load(names):
        barrier.wait()
        try:
            for name in names:
                __import__(name)
        except BaseException:
            errors.append(traceback.format_exc())

    orders = (
        ["assft_core.query.strategies.base", "assft_core.session.query"],
        ["assft_core.query", "assft_core.query.strategies"],
        ["assft_core.query.strategies.dkd", "assft_core.query.table"],
    )
    threads = [threading.Thread(target=load, args=(o,)) for o in orders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    from assft_core.query.strategies import list_strategies
    assert "assft" in list_strategies() and "random" in list_strategies(), list_strategies()
    print("".join(errors) or "ok")
    """
)


def test_threads_importing_the_engine_in_different_orders_on_a_fresh_interpreter() -> None:
    """Like two browser sessions opening different pages of a freshly started dashboard."""
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", CONCURRENT.format(root=str(ROOT))], capture_output=True,
                              text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
