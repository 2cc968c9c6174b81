"""What the dataset pages show, shaped for their templates: schema rows, budget figures,
a query answer's cells, the releases filter, consent and retention, and form parsing.

Kept apart from the routes (``_datasets.py``) so each stays short; nothing here
reads the store except :func:`consent_view`, which calls the library's own
readers (``consent.read``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from veil.data import Catalog, Consent
from veil.governance import policies

__all__ = [
    "FILTER_FIELDS",
    "FormError",
    "ReleaseFilters",
    "answer_table",
    "budget_view",
    "chart_view",
    "consent_view",
    "fmt_number",
    "parse_form",
    "release_rows",
    "schema_rows",
]

FILTER_FIELDS = ("actor", "purpose", "operation", "mechanism", "since", "until")
_MAX_FILTER = 200
_MAX_SEQ = 2**62
_SHOWN_CATEGORIES = 12


class FormError(ValueError):
    """A form's fields failed their checks; ``problems`` says which and how to fix each."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(str(p["message"]) for p in problems))
        self.problems = problems


def _problem(
    field: str, message: str, *, got: str | None = None, expected: str | None = None,
    fix: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {"field": field, "message": message, "expected": expected, "got": got, "fix": fix}


def parse_form(
    model: type[BaseModel],
    kept: Mapping[str, str],
    *,
    numbers: Mapping[str, str],
    text: tuple[str, ...] = (),
) -> Any:
    """``model`` built from a form's text: ``numbers`` (field -> an example) parsed as floats
    (an empty one left to the model's default), ``text`` fields stripped (empty: default).

    Raises:
        FormError: A field is not a number, or the model's checks refuse a value.
    """
    problems: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    for name in text:
        value = kept.get(name, "").strip()
        if value:
            values[name] = value
    for name, example in numbers.items():
        raw = kept.get(name, "").strip()
        if not raw:
            continue
        try:
            values[name] = float(raw)
        except ValueError:
            problems.append(
                _problem(
                    name,
                    f"{name} is not a number",
                    expected="a number",
                    got=repr(raw[:40]),
                    fix=f"enter a number such as {example}",
                )
            )
    if problems:
        raise FormError(problems)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise FormError([_schema_problem(err) for err in exc.errors()]) from None


def _schema_problem(err: Any) -> dict[str, Any]:
    """One of the model's refusals as the form shows it (a missing field: no echo of the form)."""
    field = ".".join(str(p) for p in err["loc"]) or "form"
    if err.get("type") == "missing":
        return _problem(field, f"{field} is required", got="an empty field", fix=f"fill in {field}")
    got = None if "input" not in err else repr(str(err["input"])[:40])
    return _problem(field, f"{field}: {err['msg']}", got=got)


# ---------------------------------------------------------------- schema
def schema_rows(schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per declared column: its role, type, bounds and categories, as text."""
    unit = schema.get("privacy_unit")
    quasi = set(schema.get("quasi_identifiers") or ())
    sensitive = set(schema.get("sensitive") or ())
    rows = []
    for column in schema.get("columns") or ():
        name = column["name"]
        roles = [
            role
            for role, held in (
                ("privacy unit", name == unit),
                ("quasi-identifier", name in quasi),
                ("sensitive", name in sensitive),
            )
            if held
        ]
        kind = column["kind"]
        if column.get("shape"):
            kind = f"{kind} {'x'.join(str(s) for s in column['shape'])}"
        bounds = column.get("bounds")
        categories = column.get("categories")
        rows.append(
            {
                "name": name,
                "role": ", ".join(roles) or "-",
                "kind": kind,
                "bounds": "-"
                if bounds is None
                else f"[{fmt_number(bounds[0])}, {fmt_number(bounds[1])}]",
                "categories": _categories(categories),
                "declared_by": column.get("declared_by") or "-",
            }
        )
    return rows


def _categories(categories: list[str] | None) -> str:
    if not categories:
        return "-"
    shown = ", ".join(categories[:_SHOWN_CATEGORIES])
    more = len(categories) - _SHOWN_CATEGORIES
    return f"{shown}, ... ({more} more)" if more > 0 else shown


# ---------------------------------------------------------------- numbers
_GROUPED = 1e5  # from here on a float is shown with thousands separators, never as 1.2e+05
_NOT_FINITE = {math.inf: "∞", -math.inf: "-∞"}


def fmt_number(value: Any) -> str:
    """A number as a reader wants it: integers whole, floats to 6 significant digits.

    Large floats keep their digits with thousands separators (a budget of 1e12
    less a spend reads 999,999,999,999.5, not 1e+12); NaN is a dash, infinity ∞.
    """
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return _NOT_FINITE.get(value, "-")  # NaN is never a key: a dash
    if isinstance(value, int) or (value == int(value) and abs(value) < 1e15):  # noqa: PLR2004
        return f"{int(value):,}"
    if _GROUPED <= abs(value) < 1e15:  # noqa: PLR2004 - exact digits in a float
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.6g}"


# ---------------------------------------------------------------- budget
def budget_view(status: Mapping[str, Any]) -> dict[str, Any]:
    """A :class:`~veil.ledger.BudgetStatus`'s dict as the page shows it (with a bar's figures)."""
    budget = status.get("budget")
    spent = status.get("spent") or {}
    check = status.get("cross_check") or {}
    unit = "rho" if budget and budget.get("kind") == "zcdp" else "epsilon"
    total = None if not budget else budget.get(unit)
    used = spent.get(unit)
    bar = None
    if total:
        shown = used if used is not None and math.isfinite(used) else total
        bar = {"unit": unit, "total": total, "spent": min(max(shown, 0.0), total)}
    return {
        "budget": budget,
        "unit": unit,
        "spent": used,
        "spent_delta": spent.get("delta"),
        "remaining": status.get("remaining"),
        "events": status.get("events", 0),
        "accountant": status.get("accountant"),
        "rdp": check.get("epsilon"),
        "rdp_skipped": check.get("skipped"),
        "rdp_shown": bool(check) and check.get("accountant") is not None,
        "bar": bar,
    }


# ---------------------------------------------------------------- burn-down and releases
def chart_view(burn: Any) -> dict[str, Any]:
    """A :class:`~veil.ledger.BurnDown` as the chart's series and the same figures as rows.

    One point per sampled release (the budget line: the budget in force then), one where
    the first budget was set before any release (nothing spent yet), and one for each
    budget change after the last release (the line ends at the budget in force now).
    """
    zcdp = burn.budget is not None and burn.budget.rho is not None
    unit = "rho" if zcdp else "epsilon"
    changes = sorted(burn.changes, key=lambda c: _aware(c.at))

    def total(budget: Any) -> float | None:
        return None if budget is None else (budget.rho if zcdp else budget.epsilon)

    rows: list[dict[str, Any]] = []
    points = [(_aware(p.at), p) for p in burn.points]
    if changes and points and _aware(changes[0].at) < points[0][0]:
        first = changes[0]
        rows.append(_row(None, _aware(first.at), 0.0, None if zcdp else 0.0, total(first.budget)))
    for at, point in points:
        in_force = [c.budget for c in changes if _aware(c.at) <= at]
        check = None if zcdp else _finite(point.rdp_epsilon)
        used = _finite(point.rho if zcdp else point.epsilon)
        rows.append(_row(point.seq, at, used, check, total(in_force[-1] if in_force else None)))
    if points:
        last_at, last = points[-1]
        for change in (c for c in changes if _aware(c.at) > last_at):
            used = _finite(last.rho if zcdp else last.epsilon)
            check = None if zcdp else _finite(last.rdp_epsilon)
            rows.append(_row(None, _aware(change.at), used, check, total(change.budget)))
    return {
        "unit": unit,
        "events": burn.events,
        "sampled": len(burn.points) < burn.events,
        "rdp_delta": burn.rdp_delta,
        "rows": rows,
        # What charts.js draws (JSON only: times as Unix seconds).
        "series": {
            "unit": unit,
            "t": [row["at"].timestamp() for row in rows],
            "spent": [row["spent"] for row in rows],
            "rdp": [row["rdp"] for row in rows],
            "budget": [row["budget"] for row in rows],
        },
    }


def _row(
    seq: int | None, at: datetime, spent: float | None, rdp: float | None, budget: float | None
) -> dict[str, Any]:
    return {"seq": seq, "at": at, "spent": spent, "rdp": rdp, "budget": budget}


def _aware(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def release_rows(items: list[Any]) -> list[dict[str, Any]]:
    """A page's :class:`~veil.ledger.LedgerEntry` items as table rows (mechanisms counted)."""
    rows = []
    for entry in items:
        names = Counter(m.name for m in entry.mechanisms)
        mechanisms = ", ".join(
            name if n == 1 else f"{name} x{n}" for name, n in sorted(names.items())
        )
        rows.append(
            {
                "seq": entry.seq,
                "at": entry.created_at,
                "actor": entry.actor,
                "purpose": entry.purpose,
                "operation": entry.operation,
                "what": entry.what,
                "mechanisms": mechanisms or "-",
                "epsilon": entry.epsilon,
                "rho": entry.rho,
            }
        )
    return rows


# ---------------------------------------------------------------- a query's answer
def answer_table(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The ``/v1`` query answer as a table: each measured cell's value with its interval."""
    columns = list(answer["columns"])
    measured = {c for row in answer["rows"] for c in columns if isinstance(row.get(c), Mapping)}
    rows = []
    for row in answer["rows"]:
        cells = []
        for column in columns:
            cell = row.get(column)
            if isinstance(cell, Mapping):
                ci = cell.get("ci")
                cells.append(
                    {
                        "value": fmt_number(cell.get("value")),
                        "ci": None if not ci else f"[{fmt_number(ci[0])}, {fmt_number(ci[1])}]",
                        "measured": True,
                    }
                )
            else:
                cells.append({"value": fmt_number(cell), "ci": None, "measured": False})
        rows.append(cells)
    charged = answer.get("charged") or {}
    budget = answer.get("budget") or {}
    return {
        "columns": [{"name": c, "measured": c in measured} for c in columns],
        "rows": rows,
        "mechanism": answer.get("mechanism"),
        "epsilon": answer.get("epsilon"),
        "delta": answer.get("delta"),
        "ci_level": answer.get("ci_level"),
        "ci_note": answer.get("ci_note"),
        "notes": answer.get("notes") or [],
        "charged": (charged.get("charged") or {}).get("epsilon"),
        "seq": charged.get("seq"),
        "budget": budget_view(budget) if budget else None,
    }


# ---------------------------------------------------------------- releases filter
@dataclass(frozen=True)
class ReleaseFilters:
    """The releases filter of the dataset page, read from its query string."""

    text: dict[str, str] = field(default_factory=dict)  # what the form shows, as typed
    since: datetime | None = None
    until: datetime | None = None
    after: int | None = None
    before: int | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> ReleaseFilters:
        problems: list[dict[str, Any]] = []
        text = {name: (params.get(name) or "").strip()[:_MAX_FILTER] for name in FILTER_FIELDS}
        since = _when(text["since"], "since", problems, end=False)
        until = _when(text["until"], "until", problems, end=True)
        after = _seq(params.get("after"), "after", problems)
        before = _seq(params.get("before"), "before", problems)
        return cls(text, since, until, after, before, problems)

    def query(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`Ledger.releases`."""
        out: dict[str, Any] = {
            name: self.text[name] or None for name in ("actor", "purpose", "operation", "mechanism")
        }
        out.update(since=self.since, until=self.until, after=self.after, before=self.before)
        return out

    def params(self) -> dict[str, str]:
        """The filters set, for the pager's links."""
        return {name: value for name, value in self.text.items() if value}

    def trail(self) -> dict[str, Any]:
        """What the request's trail entry notes: which filters were used, and the page's keys."""
        noted: dict[str, Any] = {}
        used = sorted(self.params())
        if used:
            noted["filters"] = used
        if self.after is not None:
            noted["after"] = self.after
        if self.before is not None:
            noted["before"] = self.before
        return noted


def _when(raw: str, name: str, problems: list[dict[str, Any]], *, end: bool) -> datetime | None:
    """A date (the day's start, or end for ``until``) or an ISO time; naive means UTC."""
    if not raw:
        return None
    try:
        if len(raw) == len("2026-01-31"):
            day = date.fromisoformat(raw)
            start = datetime.combine(day, time.min, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        moment = datetime.fromisoformat(raw)
    except ValueError:
        problems.append(
            _problem(
                name,
                f"{name} is not a date",
                expected="a date (2026-12-01) or a time (2026-12-01T09:30)",
                got=repr(raw[:40]),
                fix=f"enter {name} as YYYY-MM-DD",
            )
        )
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _seq(raw: str | None, name: str, problems: list[dict[str, Any]]) -> int | None:
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if not 0 <= value <= _MAX_SEQ:
        problems.append(
            _problem(
                name,
                f"{name} is not a release number",
                expected="a whole number of at least 0",
                got=repr(raw[:40]),
                fix="use the page links (Newer, Older)",
            )
        )
        return None
    return value


# ---------------------------------------------------------------- consent and retention
def consent_view(catalog: Catalog, info: Mapping[str, Any]) -> dict[str, Any] | None:
    """Consent (persons per purpose and state) and retention of a dataset, where they exist.

    The caller holds ``consent.read`` on the dataset (checked again by each reader).
    ``None`` when the dataset has neither.
    """
    name = str(info["name"])
    consent = Consent(catalog)
    # One row says whether the dataset is under consent management; only then are the
    # records counted (a grouped read of every person's latest record).
    summary = None if consent.default(name) is None else consent.summary(name)
    retention = [p.to_dict() for p in policies(catalog) if p.dataset == name]
    if summary is None and not retention:
        return None
    return {
        "managed": summary is not None,
        "default": None if summary is None else summary["default"],
        "through_record": None if summary is None else summary["through_record"],
        "purposes": []
        if summary is None
        else [
            {"purpose": purpose, **counts}
            for purpose, counts in sorted(summary["purposes"].items())
        ],
        "retention": retention[0] if retention else None,
    }
