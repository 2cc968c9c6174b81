"""The dependency order of DESIGN.md, checked on every import in src/veil.

errors, workspace, store, data -> ledger -> dp, anonymize, crypto -> train, federated
-> audit -> governance, serve -> cli, bench. A package may import only from its own
level or below; within the bottom level the order errors < workspace < store < data holds too.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "veil"

RANK = {
    "errors": 0,
    "progress": 0,
    "_childenv": 0,
    "_random": 0,
    "workspace": 1,
    "store": 2,
    "data": 3,
    "ledger": 4,
    "dp": 5,
    "anonymize": 5,
    "crypto": 5,
    "train": 6,
    "federated": 6,
    "audit": 7,
    "governance": 8,
    "serve": 8,
    "cli": 9,
    "bench": 9,
}


def _unit(path: Path) -> str:
    relative = path.relative_to(SRC)
    return relative.parts[0].removesuffix(".py")


def _imported_units(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "veil":
                names += [f"veil.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "veil" and len(parts) > 1 and parts[1] in RANK:
                found.add(parts[1])
    return found


def test_every_module_is_placed_in_the_order():
    units = {_unit(p) for p in SRC.rglob("*.py") if p.parent != SRC or p.name != "__init__.py"}
    assert units <= set(RANK), f"place these in DESIGN.md's order: {sorted(units - set(RANK))}"


def test_no_package_imports_from_above_its_level():
    violations = []
    for path in SRC.rglob("*.py"):
        if path.parent == SRC and path.name == "__init__.py":
            continue  # the top level re-exports from below, by design
        unit = _unit(path)
        for imported in _imported_units(ast.parse(path.read_text(encoding="utf-8"))):
            if RANK[imported] > RANK[unit]:
                violations.append(f"{path.relative_to(SRC)} imports veil.{imported}")
    assert not violations, "imports against DESIGN.md's dependency order:\n" + "\n".join(violations)
