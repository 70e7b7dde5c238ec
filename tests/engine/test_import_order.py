"""The engine's imports: data flows one way, and import order must not matter.

Data flows one way (docs/architecture.md): the engine packages data, models, query, train and viz
never import the session, the dashboard (app, pages) or Streamlit, not even inside a function.

Import order must not matter: the dashboard's sessions are threads that import pages at once.
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


# Packages below the session (docs/architecture.md) and what they must never import.
ENGINE_PACKAGES = ("data", "models", "query", "train", "viz")
ABOVE_THE_ENGINE = ("assft_core.session", "app", "pages", "streamlit")
DYNAMIC_IMPORTS = ("import_module", "__import__")


def _every_import(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file: function bodies, TYPE_CHECKING blocks and
    `importlib.import_module("...")` / `__import__("...")` with a literal name included; relative
    imports resolved against `name`; `from a import b` yields both `a` and `a.b`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if callee in DYNAMIC_IMPORTS and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def _is_above_the_engine(module: str) -> bool:
    return any(module == top or module.startswith(top + ".") for top in ABOVE_THE_ENGINE)


def _upward_imports(modules: dict[str, Path]) -> list[str]:
    out = []
    for name, path in sorted(modules.items()):
        if name.split(".")[1:2] and name.split(".")[1] in ENGINE_PACKAGES:  # assft_core.<package>...
            for line, imported in _every_import(name, path):
                if _is_above_the_engine(imported):
                    out.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    return out


def test_engine_packages_never_import_the_session_or_the_dashboard() -> None:
    assert _upward_imports(_modules()) == []


def test_the_upward_import_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    """The check itself: a lazy, relative or dynamic import of the session counts as well."""
    source = textwrap.dedent(
        """
        import numpy
        def late():
            from ..session import jobs
            import streamlit as st
        def dynamic():
            importlib.import_module("assft_core.session.loop")
        from assft_core import sessions_of_a_different_name
        """
    )
    fake = tmp_path / "fake.py"
    fake.write_text(source)
    offenders = {m for _, m in _every_import("assft_core.query.fake", fake) if _is_above_the_engine(m)}
    assert offenders == {"assft_core.session", "assft_core.session.jobs", "streamlit", "assft_core.session.loop"}


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
