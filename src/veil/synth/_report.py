"""The evaluation of a synthetic release as one self-contained HTML page (and its JSON form).

The page loads nothing: its style is inline and the ROC curve an inline SVG.
Every value, the card's included, goes through Jinja2's autoescaping, so a
column or dataset named with markup is shown as text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from veil._io import dumps, write_text_atomic
from veil.synth._evaluate import SynthEvaluation

__all__ = ["render_report", "report_html"]

_TEMPLATES = Path(__file__).resolve().parent / "templates"
_CARD_FIELDS = ("method", "epsilon", "delta", "workload", "dataset_sha256", "ledger_event")
_SVG = 240


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    return env


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}"
    return str(value)


def _roc_points(roc: Mapping[str, list[float]]) -> str:
    pairs = zip(roc.get("fpr", []), roc.get("tpr", []), strict=False)
    return " ".join(f"{x * _SVG:.1f},{(1 - y) * _SVG:.1f}" for x, y in pairs)


def _card_rows(card: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [
        (key, dumps(card[key]) if not isinstance(card[key], str) else card[key])
        for key in _CARD_FIELDS
        if key in card
    ]
    rows += [
        (key, value if isinstance(value, str) else dumps(value))
        for key, value in card.items()
        if key not in _CARD_FIELDS
    ]
    return rows


def report_html(evaluation: SynthEvaluation, card: Mapping[str, Any]) -> str:
    """The report as an HTML string."""
    data = evaluation.to_dict()
    claimed = evaluation.claimed_epsilon
    if claimed is None and isinstance(card.get("epsilon"), int | float):
        claimed = float(card["epsilon"])
    empirical = evaluation.empirical_epsilon
    best = evaluation.membership.best
    return (
        _environment()
        .get_template("synth_report.html.j2")
        .render(
            card_rows=_card_rows(card),
            data=data,
            claimed=claimed,
            empirical=empirical,
            exceeds=claimed is not None and empirical > claimed,
            best=best.to_dict(),
            roc_points=_roc_points(best.roc),
            svg=_SVG,
            json_text=dumps(data, indent=2),
        )
    )


def render_report(evaluation: SynthEvaluation, card: Mapping[str, Any], path: str | Path) -> Path:
    """Write the report to ``path`` (one HTML file, nothing external) and return the path."""
    target = Path(path)
    write_text_atomic(target, report_html(evaluation, card))
    return target
