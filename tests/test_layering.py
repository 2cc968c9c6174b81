"""The house rules of DESIGN.md, checked on every import in src/veil.

1. **The dependency order.** errors, workspace, store, vault, data -> ledger -> dp,
   anonymize, he, mpc -> train, federated -> audit -> governance, serve -> cli, bench. A
   package may import only from its own level or below; within the bottom level the order
   errors < workspace < store < vault < data holds too.
2. **Public surfaces.** A module whose name starts with an underscore is private to the
   package that holds it: ``veil.train._engine`` may be imported from ``veil.train`` and
   nowhere else, and ``from veil.train import _engine`` or a private name such as
   ``from veil.data.readers import _TARGETS`` is the same reach. Another package uses what
   ``veil.<pkg>`` exports, or a public submodule (``veil.store.tables``,
   ``veil.ledger.calibrate``) that a package keeps for Veil's own packages. Top-level
   ``veil._x`` modules (the shared primitives beside ``errors`` and ``progress``) belong to
   the whole of Veil and are open to every package.
3. **No import circles.** The graph of modules, built from every import (at module level
   *and* inside functions: a lazy import that dodges a circle is still a circle), has no
   cycle. Imports under ``if TYPE_CHECKING:`` count too: they never run, but two modules
   that each need the other to be read are one tangle (the audit's report type, once
   defined in the orchestrator and typed by the verdicts it called, was the case in point).

Relative imports are resolved to absolute names and obey the same rules. The rules cover
src/veil; tests may import the private modules of the package they test. Each test
reports every violation it finds, so a failure is a to-do list.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "veil"

RANK = {
    "errors": 0,
    "progress": 0,
    "_childenv": 0,
    "_random": 0,
    "_io": 0,
    "_memory": 0,
    "_validate": 0,
    "_trailscan": 0,
    "_lazy": 0,
    "workspace": 1,
    "store": 2,
    "vault": 3,
    "access": 4,
    "data": 5,
    "ledger": 6,
    "dp": 7,
    "anonymize": 7,
    "he": 7,
    "mpc": 7,
    "train": 8,
    "federated": 8,
    "audit": 9,
    "synth": 9,
    "governance": 10,
    "serve": 10,
    "cli": 11,
    "bench": 11,
}


@dataclass(frozen=True)
class Import:
    """One imported name, resolved: ``module`` is absolute; ``name`` is set for ``from m import name``."""

    source: str  # the importing module, e.g. "veil.audit._run"
    path: Path
    line: int
    module: str
    name: str | None


def _module_name(path: Path) -> str:
    parts = ("veil", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(path: Path) -> list[Import]:
    """Every import in a file, at any depth (in functions, under ``if TYPE_CHECKING:``)."""
    source = _module_name(path)
    package = source if _is_package(path) else source.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(source, path, node.lineno, a.name, None) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.extend(Import(source, path, node.lineno, module, a.name) for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


MODULES = {_module_name(p): p for p in _sources()}


def _unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "veil" and len(parts) > 1 else None


def _where(imp: Import) -> str:
    return f"{imp.path.relative_to(SRC.parent)}:{imp.line}"


def _targets(imp: Import) -> list[str]:
    """The full dotted names an import reaches: the module, plus ``module.name`` for a from-import."""
    return [imp.module] + ([f"{imp.module}.{imp.name}"] if imp.name else [])


def test_every_module_is_placed_in_the_order():
    units = {_unit(m) for m in MODULES if m != "veil"}
    assert units <= set(RANK), f"place these in DESIGN.md's order: {sorted(units - set(RANK))}"


@pytest.mark.slow
def test_no_package_imports_from_above_its_level():
    violations = []
    for module, path in MODULES.items():
        if module == "veil":
            continue  # the top level re-exports from below, by design
        unit = _unit(module)
        for imp in _imports(path):
            for target in _targets(imp):
                imported = _unit(target)
                if imported in RANK and RANK[imported] > RANK[unit]:
                    violations.append(f"{_where(imp)} imports {target}")
                    break
    assert not violations, "imports against DESIGN.md's dependency order:\n" + "\n".join(violations)


def _private_reach(imp: Import) -> str | None:
    """The private part of another package that an import reaches into, if any."""
    importer = _unit(imp.source)
    for target in _targets(imp):
        parts = target.split(".")
        if parts[0] != "veil" or len(parts) < 3 or parts[1] == importer:
            continue
        if not (SRC / parts[1]).is_dir():
            continue  # veil._x: the shared primitives, open to all of Veil
        private = [p for p in parts[2:] if p.startswith("_") and not p.startswith("__")]
        if private:
            return target
    return None


@pytest.mark.slow
def test_no_package_imports_another_packages_private_modules():
    violations = set()
    for path in MODULES.values():
        for imp in _imports(path):
            reached = _private_reach(imp)
            if reached:
                violations.add(f"{_where(imp)} imports {reached}")
    assert not violations, (
        f"{len(violations)} imports reach into another package's private modules or names;"
        " export what is needed from the package (or a public submodule of it):\n"
        + "\n".join(sorted(violations))
    )


def _graph() -> dict[str, dict[str, Import]]:
    """Module -> {imported module: the first import that made the edge}, within src/veil."""
    graph: dict[str, dict[str, Import]] = {m: {} for m in MODULES}
    for module, path in MODULES.items():
        for imp in _imports(path):
            if imp.name and f"{imp.module}.{imp.name}" in MODULES:
                target = f"{imp.module}.{imp.name}"  # from package import submodule
            elif imp.module in MODULES:
                target = imp.module
            else:
                continue
            if target != module:
                graph[module].setdefault(target, imp)
    return graph


def _reachable(graph: dict[str, dict[str, Import]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for succ in graph[todo.pop()]:
            if succ not in seen:
                seen.add(succ)
                todo.append(succ)
    return seen


def _cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The groups of modules that reach each other (strongly connected components of size > 1)."""
    reach = {module: _reachable(graph, module) for module in graph}
    components: list[list[str]] = []
    placed: set[str] = set()
    for module in sorted(graph):
        if module in placed or module not in reach[module]:
            continue
        component = sorted(m for m in reach[module] if module in reach[m])
        placed.update(component)
        components.append(component)
    return components


def test_no_import_circles():
    graph = _graph()
    report = []
    for component in _cycles(graph):
        members = set(component)
        report.append("circle: " + ", ".join(component))
        for module in component:
            for target, imp in sorted(graph[module].items()):
                if target in members:
                    report.append(f"    {module} -> {target}  ({_where(imp)})")
    assert not report, "import circles (lazy imports count):\n" + "\n".join(report)
