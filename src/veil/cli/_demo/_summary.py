"""The demo's self-contained HTML summary, from one Jinja2 template with autoescaping on.

The template (``templates/summary.html``, shipped as package data) holds the
markup; this module only gathers what the tour recorded into plain values for
it. Every value is escaped by Jinja2 (``autoescape=True``): a dataset or
column name, a note or an error message cannot inject markup.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from veil import __version__

if TYPE_CHECKING:
    from veil.data import DatasetInfo

__all__ = ["summary_html"]


class Tour(Protocol):
    """What the summary reads of a tour (``veil.cli._demo._steps.Tour``, which imports this)."""

    directory: Path
    steps: list[dict[str, Any]]


def _step(tour: Tour, prefix: str) -> dict[str, Any] | None:
    return next((s for s in tour.steps if s["title"].startswith(prefix)), None)


def _columns(info: DatasetInfo) -> list[dict[str, Any]]:
    """One row per column: kind, role, what was declared, missing and out-of-bounds counts."""
    schema = info.schema
    rows = []
    for spec in schema.columns:
        if spec.name == schema.privacy_unit:
            role = "privacy unit"
        elif spec.name in schema.quasi_identifiers:
            role = "quasi-identifier"
        elif spec.name in schema.sensitive:
            role = "sensitive"
        else:
            role = ""
        if spec.bounds is not None:
            declared: str | None = f"{spec.bounds[0]:g} .. {spec.bounds[1]:g}"
        elif spec.categories is not None:
            declared = " | ".join(spec.categories)
        else:
            declared = None
        stats = info.report["columns"].get(spec.name, {})
        outside = stats.get("below_lower", 0) + stats.get("above_upper", 0) if spec.bounds else ""
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "role": role,
                "declared": declared,
                "missing": stats.get("missing", ""),
                "outside": outside,
            }
        )
    return rows


def _risk_rows(step: dict[str, Any], linked: int) -> list[tuple[str, str, str]]:
    """The anonymisation step's before/after figures, as (label, before, after) text."""
    getters: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
        ("equivalence classes", lambda r: f"{r['classes']['classes']:,}"),
        ("k (smallest class)", lambda r: str(r["classes"]["k"])),
        ("unique records", lambda r: f"{r['classes']['unique_share']:.1%}"),
        ("highest prosecutor risk", lambda r: f"{r['risk']['prosecutor_max']:.3f}"),
        ("records at risk (> 0.2)", lambda r: f"{r['risk']['prosecutor_at_risk']:.1%}"),
        ("l-diversity of progression", lambda r: str(r["l_diversity"]["progression"]["distinct"])),
        ("t-closeness of progression", lambda r: f"{r['t_closeness']['progression']:.3f}"),
        (
            f"linkage attack: of {linked} known patients, re-identified",
            lambda r: str(r["linkage"]["correct"]),
        ),
        (
            "information loss (GCP)",
            lambda r: "0" if r["utility"] is None else f"{r['utility']['gcp']:.3f}",
        ),
    )
    return [(label, get(step["before"]), get(step["after"])) for label, get in getters]


def _query_rows(answer: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Each answer cell as {text} or {value, interval}: the template formats both."""
    rows = []
    for row in answer["rows"]:
        cells = []
        for column in answer["columns"]:
            cell = row[column]
            if isinstance(cell, dict):
                interval = cell.get("ci") or cell.get("ci_quantile_level")
                cells.append({"value": cell["value"], "interval": interval})
            else:
                cells.append({"text": str(cell)})
        rows.append(cells)
    return rows


def summary_html(tour: Tour, info: DatasetInfo, *, references: int, k: int, linked: int) -> str:
    """The summary page of a finished tour (``references``, ``k``, ``linked``: the tour's settings)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined  # noqa: PLC0415 - only here

    env = Environment(
        loader=PackageLoader("veil.cli._demo", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = format
    query = _step(tour, "Answer")
    anonymise = _step(tour, "Scan")
    return env.get_template("summary.html").render(
        version=__version__,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        directory=str(tour.directory),
        steps=tour.steps,
        info=info,
        columns=_columns(info),
        query=query,
        query_rows=None if query is None else _query_rows(query["answer"]),
        refusal=_step(tour, "Refuse") or {},
        trail=_step(tour, "An analyst"),
        model=_step(tour, "Train"),
        audit=_step(tour, "Audit"),
        anonymise=anonymise,
        risk_rows=None if anonymise is None else _risk_rows(anonymise, linked),
        redact=_step(tour, "Redact"),
        he=_step(tour, "Encrypted"),
        mpc=_step(tour, "A secure average"),
        forget=_step(tour, "Forget"),
        references=references,
        k=k,
        linked=linked,
    )
