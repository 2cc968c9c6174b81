"""Generalisation hierarchies as declared: the file format, its parsing, the bundled files.

A hierarchies file (YAML or JSON) maps each quasi-identifier to how it may be
generalised: a taxonomy ``tree``, numeric ``interval`` bins or ``date`` bins
(automatic or declared, with optional bounds), ZIP and postcode ``prefix``
truncation, or ``flat`` (the value or ``*``); docs/anonymize.md shows the
format. :mod:`veil.anonymize.tabular._domain` turns the declarations into the
ordered code space the algorithms work in. ``hierarchies/`` holds the files
shipped with Veil (package data of the wheel).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.errors import InvalidInputError, NotFoundError

__all__ = ["BUNDLED_HIERARCHIES", "HierarchySpec", "bad_spec", "load_hierarchies"]


@dataclass(frozen=True)
class HierarchySpec:
    """How one quasi-identifier may be generalised (as declared in a hierarchies file).

    Attributes:
        kind: ``tree`` (a categorical taxonomy), ``interval`` (numbers),
            ``date`` (day, month, year), ``prefix`` (ZIP or postcode
            truncation, one character per level), or ``flat`` (value or ``*``).
        tree: For ``tree``: nested mapping ``{group: {subgroup: [values]}}``
            whose leaves are the column's values.
        widths: For ``interval``: bin width of each level (each a multiple
            of the one before), e.g. ``[5, 10, 20]``; empty for automatic.
        origin: For ``interval``: where the bins start (default: the
            declared or observed minimum, rounded down to the first width).
        bounds: Declared ``(min, max)`` of a numeric domain; information loss
            is measured against it (default: the observed range, which the
            scan then reports as read from the data).
    """

    kind: str
    tree: Mapping[str, Any] | None = None
    widths: tuple[float, ...] = ()
    origin: float | None = None
    bounds: tuple[float, float] | None = None

    @classmethod
    def from_dict(cls, column: str, raw: Any) -> HierarchySpec:
        """Parse one entry of a hierarchies file."""
        if isinstance(raw, str):
            raw = {"type": raw}
        if not isinstance(raw, Mapping):
            raise bad_spec(column, "a mapping with a 'type' key", type(raw).__name__)
        kind = str(raw.get("type", "tree" if "tree" in raw else "interval"))
        if kind not in {"tree", "interval", "date", "prefix", "flat"}:
            raise bad_spec(column, "type tree, interval, date, prefix or flat", repr(kind))
        tree = raw.get("tree")
        if kind == "tree" and not isinstance(tree, Mapping):
            raise bad_spec(column, "a 'tree' mapping for type tree", repr(tree))
        widths = tuple(float(w) for w in raw.get("widths", ()))
        if any(w <= 0 for w in widths) or any(
            not math.isclose(b / a, round(b / a)) for a, b in itertools.pairwise(widths)
        ):
            raise bad_spec(
                column, "positive widths, each a multiple of the one before", str(widths)
            )
        bounds = raw.get("bounds")
        return cls(
            kind=kind,
            tree=tree,
            widths=widths,
            origin=None if raw.get("origin") is None else float(raw["origin"]),
            bounds=None if bounds is None else (float(bounds[0]), float(bounds[1])),
        )


def bad_spec(column: str, expected: str, got: str) -> InvalidInputError:
    return InvalidInputError(
        f"the hierarchy of {column!r} is not valid",
        expected=expected,
        got=got,
        fix="see docs/anonymize.md for the hierarchies file format",
    )


BUNDLED_HIERARCHIES = Path(__file__).resolve().parent / "hierarchies"
"""The hierarchies shipped with Veil (``adult.yaml``), package data of the wheel."""


def load_hierarchies(path: str | Path) -> dict[str, HierarchySpec]:
    """Read a hierarchies file (YAML or JSON): ``{column: spec}``.

    A name without a file of that name is looked up among the bundled
    hierarchies (``adult``: the UCI Adult quasi-identifiers).
    """
    path = Path(path)
    if not path.is_file() and (BUNDLED_HIERARCHIES / f"{path}.yaml").is_file():
        path = BUNDLED_HIERARCHIES / f"{path}.yaml"
    if not path.is_file():
        bundled = ", ".join(sorted(p.stem for p in BUNDLED_HIERARCHIES.glob("*.yaml")))
        raise NotFoundError(
            "hierarchies file not found",
            expected=f"a YAML or JSON file, or a bundled name ({bundled})",
            got=str(path),
            fix="check the path of --hierarchies",
        )
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            import yaml  # noqa: PLC0415 - only when a file is given

            raw = yaml.safe_load(text)
    except Exception as exc:  # yaml and json raise many kinds
        raise InvalidInputError(
            "the hierarchies file does not parse",
            expected="YAML or JSON",
            got=str(exc).splitlines()[0],
            fix="correct the file",
        ) from exc
    if not isinstance(raw, Mapping):
        raise InvalidInputError(
            "the hierarchies file must map column names to hierarchies",
            expected="a mapping at the top level",
            got=type(raw).__name__,
            fix="see docs/anonymize.md",
        )
    return {str(k): HierarchySpec.from_dict(str(k), v) for k, v in raw.items()}
