"""The package's import structure: no circle among compkit's modules, heavy libraries imported late.

Read from the source with `ast`, function-level imports included: a circle hidden inside a function is
still a circle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "compkit"
# Imported inside the functions that need them: the deep-learning and service clients (slow, or authenticating
# at import), and the array stack, which alone would double the time of `compkit --help`.
HEAVY = ("torch", "torchvision", "timm", "optuna", "kaggle", "cuml", "cudf", "faiss", "transformers", "matplotlib",
         "dask", "sklearn", "numpy", "pandas", "scipy", "PIL", "pyarrow", "joblib")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))}


def imported(node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    """Return the modules an import statement names (`from a import b` names a.b when that is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]


def imports_of(tree: ast.Module, known: set[str]) -> tuple[set[str], set[str]]:
    """Return (modules imported at module level, modules imported inside functions)."""
    top, late = set(), set()
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    inside = {id(node) for function in functions for node in ast.walk(function)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
            (late if id(node) in inside else top).update(imported(node, known))
    return top, late


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]], dict[str, set[str]]]:
    trees = modules()
    known = set(trees)
    top, late = {}, {}
    for name, tree in trees.items():
        top[name], late[name] = imports_of(tree, known)
    edges = {name: {m for m in top[name] | late[name] if m in known and m != name} for name in trees}
    return edges, top, late


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_among_compkit_modules():
    edges, _, _ = graph()
    assert circles(edges) == []


def test_circle_detection_finds_a_circle_hidden_in_a_function():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    tree = ast.parse("import x\ndef f():\n    from compkit.y import z\n")
    assert imports_of(tree, {"compkit.y"}) == ({"x"}, {"compkit.y"})


def test_compkit_modules_are_imported_late_only_to_keep_heavy_libraries_late():
    """A function-level import of a compkit module is allowed only where that module pulls in a heavy library."""
    edges, top, late = graph()
    heavy: dict[str, bool] = {}

    def is_heavy(name: str, seen: frozenset = frozenset()) -> bool:
        if name not in heavy:
            direct = any(m.split(".")[0] in HEAVY for m in top[name])
            heavy[name] = direct or any(is_heavy(m, seen | {name}) for m in top[name] & set(edges) - seen - {name})
        return heavy[name]

    dodging = sorted(f"{name} imports {target} inside a function" for name in edges for target in late[name]
                     if target in edges and not is_heavy(target))
    assert dodging == []


def test_the_cli_imports_no_heavy_library_until_a_command_needs_it():
    code = f"import sys, compkit.cli.app; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
