"""The Lambda layer (shared/) is exactly what the functions run: every module under shared/ is
reachable from a function's handler (functions/*/app.py) by imports, counting those inside
functions. What the layer must not import (the operator side, the console, the handlers, moto,
textual, rich) is import-linter's to hold: the contracts under [tool.importlinter] in
pyproject.toml, run by `make lint`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = sorted((ROOT / "functions").glob("*/app.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(path: Path) -> set[str]:
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    return imports_in(path.read_text(), package)


def imports_in(source: str, package: str) -> set[str]:
    """Every module ``source`` imports, anywhere in it (top level, functions, TYPE_CHECKING
    blocks), relative imports resolved in ``package``; ``from a import b`` counts ``a`` and
    ``a.b`` (which is a module or not: the graph keeps only the names that are files)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def reachable_from(roots: list[Path]) -> set[Path]:
    """The project's modules that ``roots`` import, transitively, with the packages on the way
    (importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``)."""
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imports_of(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                found = module_path(".".join(parts[:i]))
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


def layer_modules() -> set[Path]:
    return {p for p in (ROOT / "shared").rglob("*.py") if "__pycache__" not in p.parts}


def test_the_graph_sees_imports_inside_functions_and_relative_ones() -> None:
    # GIVEN a module importing in a function, under TYPE_CHECKING, and relatively
    source = "def f():\n    from shared.errors import X\nif T:\n    import shared.jobs\nfrom .base import Endpoint\n"

    # WHEN its imports are read as a module of shared.endpoints
    found = imports_in(source, "shared.endpoints")

    # THEN all three are found
    assert {"shared.errors", "shared.errors.X", "shared.jobs", "shared.endpoints.base"} <= found


def test_every_module_of_the_layer_is_run_by_a_function() -> None:
    # GIVEN the handlers and every module under shared/
    assert len(HANDLERS) >= 2
    layer = layer_modules()

    # WHEN the import graph is followed from the handlers
    reached = reachable_from(HANDLERS)

    # THEN every module of the layer is on it: the layer carries nothing the functions do not run
    unreached = sorted(str(p.relative_to(ROOT)) for p in layer - reached)
    assert unreached == []
