"""maxact's import graph read from the source with `ast`: every import statement, also those
inside functions (lazy imports make cycles too, just later)."""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = (ROOT / "server", ROOT / "client", ROOT / "proto")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every maxact module (a package is its __init__.py)."""
    modules = {}
    for root in SOURCE_ROOTS:
        for path in sorted((root / "maxact").rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The maxact modules one import statement loads: `from a import b` is module a.b when that
    is a module, else module a (a name defined in a). Parent packages, which Python imports
    first anyway, are not counted: a package's __init__ is a dependency only when named."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, node.module] if node.module else package)
    else:
        base = node.module or ""
    named = [f"{base}.{alias.name}" for alias in node.names]
    submodules = [name for name in named if name in known]
    return submodules + ([base] if len(submodules) < len(named) else [])


@functools.cache
def import_edges() -> dict[str, set[str]]:
    """module -> the maxact modules it imports anywhere in its file."""
    modules = module_files()
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            for name in _imported(node, module, is_package, set(modules)):
                if name in modules and name != module:
                    edges[module].add(name)
    return edges


@functools.cache
def external_imports() -> dict[str, set[str]]:
    """module -> the top-level names of the packages it imports from outside maxact (`grpc`,
    `grpc_status`, `numpy`), anywhere in its file."""
    modules = module_files()
    found: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            found[module].update(n.split(".")[0] for n in names if n.split(".")[0] != "maxact")
    return found


def unit(module: str) -> str:
    """The architectural unit a module belongs to: its subpackage of maxact.server /
    maxact.client (`server.scan`, `client.cli`), a top-level module on its own
    (`server.app`, `client.types`), or `v1` for the generated API."""
    parts = module.split(".")[1:]  # drop "maxact"
    if parts[0] == "v1" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:2])


def unit_edges() -> dict[str, dict[str, list[tuple[str, str]]]]:
    """unit -> unit -> the module edges that make that dependency (for messages)."""
    units: dict[str, dict[str, list[tuple[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for source, targets in import_edges().items():
        for target in targets:
            if unit(source) != unit(target):
                units[unit(source)][unit(target)].append((source, target))
    return units


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found
