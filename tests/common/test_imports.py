"""No import cycle inside ``services``, even one hidden by an import inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "services"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted((ROOT / PACKAGE).rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set[str]:
    """Every module of the package that ``name`` imports, at any depth of its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # ``from . import web`` imports the module ``web``, not a name of the package.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in found if module in MODULES and module != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as the list of modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


class TestImports:
    def test_no_import_cycle_in_services(self) -> None:
        """Modules import each other one way only; a late import does not hide a cycle."""
        graph = {name: imported_modules(name, path) for name, path in MODULES.items()}
        cycle = find_cycle(graph)
        assert cycle is None, "import cycle: " + " -> ".join(cycle or [])

    def test_the_checker_sees_late_relative_imports(self, tmp_path: Path) -> None:
        """``from .x import y`` inside a function is an edge, resolved against the package."""
        source = tmp_path / "late.py"
        source.write_text("def f():\n    from .web import READINESS\n    from . import keys\n")
        assert imported_modules("services.common.late", source) == {
            "services.common",
            "services.common.web",
            "services.common.keys",
        }

    def test_the_checker_finds_a_cycle(self) -> None:
        assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
        assert find_cycle({"a": {"b"}, "b": set()}) is None
