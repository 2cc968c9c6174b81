"""DP analytics over HTTP: datasets, their schemas, DP queries, budgets and the ledger's history.

Each route is a thin shell over the library, exactly as ``veil query`` and
``veil budget`` are: :func:`veil.dp.query_dataset` is the one budget gate (it
checks ``budget.spend``, previews the charge, loads only the columns the plan
reads, and charges the ledger, with its trail entry, in one transaction before
any answer is computed). The route adds nothing to the accounting; it only
parses the body, names what the request did on its trail entry, and shapes the
JSON.

What the request's ``serve.request`` entry carries: the dataset, the stated
purpose, the epsilon and delta asked for, the ledger event the charge made,
and the SQL's SHA-256, not its text: a ``WHERE`` clause can quote values from
the data (``name = 'Alice'``), and every request's entry is read by whoever
reads the trail. The digest ties the request to the SQL a client kept (a
guessable query can be confirmed by guessing; no answer can). The release
itself is described by the library exactly as for ``veil query``: the ledger
event and its ``privacy.charge`` trail entry name the SQL as their ``what``
(what was released must be auditable), so the text is kept where releases
are, not on every request's entry.

What a caller sees of a dataset is its declared metadata (schema, roles,
bounds, categories, size, fingerprint), never the server's file path or
registration report: those describe the operator's machine, not the data's
contract, and ``dataset.read_metadata`` is granted to analysts and auditors.

The ledger's history is paged by release sequence number (``?after=<seq>``):
releases are appended with increasing ``seq`` under the ledger's lock, so a
client that passes the last ``seq`` it saw gets every later release once. Budget
changes carry no ``seq``; they are few (an owner sets a budget), so each page
returns all of them, apart from the releases.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from veil.access import Permission
from veil.errors import BudgetExceededError, InvalidInputError
from veil.ledger import MAX_RELEASE_EPSILON
from veil.serve._auth import Caller, annotate, needs
from veil.serve._errors import ERROR_RESPONSES
from veil.serve._state import ServeState, get_state

__all__ = [
    "BudgetBody",
    "BudgetStatusModel",
    "BurnDownModel",
    "DatasetDetail",
    "DatasetList",
    "HistoryPage",
    "QueryBody",
    "QueryResponse",
    "router",
]

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=ERROR_RESPONSES)

# veil.dp refuses longer SQL (MAX_SQL_CHARS); the same bound here puts it in the OpenAPI schema.
MAX_SQL_CHARS = 10_000
MAX_PURPOSE_CHARS = 500
MAX_HISTORY_PAGE = 1000
MAX_BURNDOWN_POINTS = 2000
DEFAULT_PURPOSE = "statistics: ad-hoc analysis"
SQL_DESCRIPTION = (
    "SELECT [g,] COUNT(*) | SUM(x) | AVG(x) | VARIANCE(x) | MEDIAN(x) | QUANTILE(x, q) "
    "[AS name] FROM t [WHERE ...] [GROUP BY g]; the table is `t` or the dataset's name"
)

State = Annotated[ServeState, Depends(get_state)]
# The catalogue's rule for names (veil.data): a name outside it cannot be registered, and the
# trail's dataset column holds 128 characters.
DatasetName = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="A registered dataset's name (1-128 letters, digits, '.', '_', '-').",
    ),
]


# ---------------------------------------------------------------- models
class BudgetStatusModel(BaseModel):
    """A dataset's budget, what its releases spent, and what remains (``veil budget show``)."""

    dataset: str
    budget: dict[str, Any] | None = Field(
        description="{kind: approx_dp, epsilon, delta} or {kind: zcdp, rho}; null: none set "
        "(nothing may be released)."
    )
    spent: dict[str, float | None]
    remaining: float | None = Field(description="Epsilon (at the budget's delta) or rho left.")
    events: int = Field(description="Releases charged so far.")
    accountant: str
    cross_check: dict[str, Any] = Field(default_factory=dict)


class BudgetSummary(BaseModel):
    budget: dict[str, Any] | None
    spent: dict[str, float | None]
    remaining: float | None
    events: int


class DatasetSummary(BaseModel):
    name: str
    privacy_unit: str | None = Field(description="The column that identifies a person.")
    one_row_per_person: bool
    rows: int
    columns: int
    managed: bool
    budget: BudgetSummary | None = Field(
        description="Null when the key may not read this dataset's ledger (ledger.read)."
    )


class DatasetList(BaseModel):
    datasets: list[DatasetSummary]


class DatasetDetail(BaseModel):
    """A dataset's declared contract: what a query may ask of it."""

    name: str
    format: str
    rows: int
    columns: int
    content_sha256: str = Field(description="The registered bytes' fingerprint.")
    managed: bool
    version: int | None
    created_at: str
    privacy_schema: dict[str, Any] = Field(
        description="Privacy unit, quasi-identifiers, sensitive columns, contribution bounds, "
        "and each column's kind, bounds and categories."
    )


class QueryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, max_length=MAX_SQL_CHARS, description=SQL_DESCRIPTION)
    # Strict: a JSON number, never a bool or a string coerced into one (``"epsilon": true``
    # would otherwise be read as epsilon 1.0 and charged). Integers stay numbers.
    epsilon: float = Field(
        gt=0,
        le=MAX_RELEASE_EPSILON,
        allow_inf_nan=False,
        strict=True,
        description="Epsilon to spend.",
    )
    delta: float = Field(
        0.0, ge=0, lt=1, allow_inf_nan=False, strict=True, description="Delta to spend."
    )
    purpose: str = Field(
        DEFAULT_PURPOSE,
        min_length=1,
        max_length=MAX_PURPOSE_CHARS,
        description="Why (recorded in the ledger and on the trail).",
    )
    confidence: float = Field(
        0.95,
        gt=0,
        lt=1,
        allow_inf_nan=False,
        strict=True,
        description="Level of the noise intervals.",
    )
    mechanism: Literal["auto", "laplace", "gaussian"] = Field(
        "auto", description="auto picks the smaller error; gaussian needs delta > 0."
    )


class Charge(BaseModel):
    """The ledger's receipt: the event this answer was charged as."""

    event_id: int
    seq: int
    dataset: str
    charged: dict[str, float | None]
    budget: BudgetStatusModel


class QueryResponse(BaseModel):
    columns: list[str]
    rows: list[dict[str, Any]] = Field(
        description="One per group; a measured cell is {value, scale, ci, ...}."
    )
    epsilon: float
    delta: float
    mechanism: str
    ci_level: float
    ci_note: str
    notes: list[str]
    charged: Charge
    budget: BudgetStatusModel = Field(description="The dataset's budget right after this charge.")


class HistoryPage(BaseModel):
    dataset: str
    releases: list[dict[str, Any]] = Field(
        description="Charged releases matching the filters: seq > after, oldest first; or "
        "seq < before, newest first (as `veil budget history`)."
    )
    budget_changes: list[dict[str, Any]] = Field(description="Every budget change, oldest first.")
    next_after: int | None = Field(
        description="Pass as ?after= for the releases after this page; null when none match."
    )
    next_before: int | None = Field(
        None, description="Pass as ?before= for the releases before this page; null when none."
    )
    total: int | None = Field(
        None,
        description="The dataset's releases, on all pages; null under a filter (the matches "
        "are not counted).",
    )
    order: Literal["asc", "desc"] = Field("asc", description="asc: oldest first.")
    filters: dict[str, str | None] = Field(default_factory=dict)


class BudgetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epsilon: float = Field(
        gt=0, allow_inf_nan=False, strict=True, description="The dataset's total epsilon."
    )
    delta: float = Field(
        0.0,
        ge=0,
        lt=1,
        allow_inf_nan=False,
        strict=True,
        description="The total delta (below 1 / the number of people in the data).",
    )
    reason: str = Field(
        "",
        max_length=MAX_PURPOSE_CHARS,
        description="Why (needed to change a budget; kept in the history and on the trail).",
    )


class BurnPointModel(BaseModel):
    seq: int
    at: str
    epsilon: float | None = Field(description="PLD spend after this release (as stored).")
    delta: float | None
    rho: float | None
    rdp_epsilon: float | None = Field(description="RDP cross-check at the budget's delta.")


class BurnDownModel(BaseModel):
    dataset: str
    budget: dict[str, Any] | None
    events: int
    rdp_delta: float | None
    points: list[BurnPointModel]
    changes: list[dict[str, Any]] = Field(description="Budget changes, oldest first.")


# ---------------------------------------------------------------- routes
@router.get(
    "",
    response_model=DatasetList,
    summary="Datasets this key may see",
)
def list_datasets(
    *,
    caller: Caller = needs(Permission.DATASET_READ_METADATA, any_dataset=True),
    state: State,
) -> dict[str, Any]:
    """Registered datasets whose metadata the key may read, with a budget summary for each
    whose ledger it may read."""
    access = caller.access
    catalog = state.catalog(access)
    ledger = state.ledger(access)
    items = []
    for info in catalog.list():
        budget = None
        if access.allows(Permission.LEDGER_READ, info.name):
            status = ledger.status(info.name, cross_check=False)
            budget = {
                "budget": None if status.budget is None else status.budget.to_dict(),
                "spent": status.spent.to_dict(),
                "remaining": status.remaining,
                "events": status.events,
            }
        items.append(
            {
                "name": info.name,
                "privacy_unit": info.schema.privacy_unit,
                "one_row_per_person": info.schema.privacy_unit is None,
                "rows": info.n_rows,
                "columns": len(info.schema.columns),
                "managed": info.managed,
                "budget": budget,
            }
        )
    return {"datasets": items}


@router.get(
    "/{name}",
    response_model=DatasetDetail,
    summary="A dataset's declared schema",
)
def get_dataset(
    *,
    name: DatasetName,
    request: Request,
    caller: Caller = needs(Permission.DATASET_READ_METADATA, dataset_param="name"),
    state: State,
) -> dict[str, Any]:
    """The declared privacy schema (roles, bounds, categories), size and fingerprint."""
    annotate(request, dataset=name)
    info = state.catalog(caller.access).get(name)
    return {
        "name": info.name,
        "format": info.format,
        "rows": info.n_rows,
        "columns": len(info.schema.columns),
        "content_sha256": info.content_sha256,
        "managed": info.managed,
        "version": info.version,
        "created_at": info.created_at.isoformat(),
        "privacy_schema": info.schema.to_dict(),
    }


@router.post(
    "/{name}/query",
    response_model=QueryResponse,
    summary="A DP SQL query",
)
def query(
    *,
    name: DatasetName,
    body: QueryBody,
    request: Request,
    caller: Caller = needs(Permission.BUDGET_SPEND, dataset_param="name"),
    state: State,
) -> dict[str, Any]:
    """Answer ``sql`` with differential privacy; the ledger is charged before it runs.

    A query that cannot run (malformed SQL, a column the schema lacks) costs
    nothing; one the budget cannot pay is refused (403 ``budget_exceeded``,
    with what remains in ``details``) before any row is read.
    """
    from veil.dp import query_dataset  # noqa: PLC0415 - OpenDP and Polars load on first query

    annotate(
        request,
        dataset=name,
        purpose=body.purpose,
        epsilon=body.epsilon,
        delta=body.delta,
        mechanism=body.mechanism,
        sql_sha256=hashlib.sha256(body.sql.encode("utf-8")).hexdigest(),
    )
    ledger = state.ledger(caller.access)
    try:
        result = query_dataset(
            state.catalog(caller.access),
            guard=ledger,
            dataset=name,
            sql=body.sql,
            epsilon=body.epsilon,
            delta=body.delta,
            purpose=body.purpose,
            confidence=body.confidence,
            mechanism=body.mechanism,
        )
    except BudgetExceededError as exc:
        # The gate's refusal names what is left when a budget exists; without one, say so too.
        exc.details.setdefault("remaining", None)
        exc.details.setdefault("budget", None)
        raise
    receipt = result.charged
    annotate(request, ledger_event=receipt["event_id"], ledger_seq=receipt["seq"])
    return {**result.to_dict(), "budget": receipt["budget"]}


@router.get(
    "/{name}/budget",
    response_model=BudgetStatusModel,
    summary="A dataset's budget",
)
def budget(
    *,
    name: DatasetName,
    request: Request,
    caller: Caller = needs(Permission.LEDGER_READ, dataset_param="name"),
    state: State,
    cross_check: Annotated[
        bool,
        Query(
            description="Add the RDP accountant's figure (recomposes the whole history: "
            "hundreds of milliseconds at a few hundred releases; false skips it)."
        ),
    ] = True,
) -> dict[str, Any]:
    """The budget, what has been spent (with the RDP accountant's cross-check), what remains."""
    annotate(request, dataset=name)
    return state.ledger(caller.access).status(name, cross_check=cross_check).to_dict()


@router.put(
    "/{name}/budget",
    response_model=BudgetStatusModel,
    summary="Set a dataset's budget",
)
def set_budget(
    *,
    name: DatasetName,
    body: BudgetBody,
    request: Request,
    caller: Caller = needs(Permission.BUDGET_SET, dataset_param="name"),
    state: State,
) -> dict[str, Any]:
    """Give the dataset an (epsilon, delta) budget, or change it (``veil budget set``).

    Owners only (``budget.set``). Changing a budget needs a reason, kept with the
    change in the ledger's history and on the trail. A budget below what is already
    spent is accepted, as on the command line: nothing remains, and every later
    release is refused until the budget is raised.
    """
    from veil.ledger import Budget  # noqa: PLC0415 - the ledger loads with its first route

    annotate(request, dataset=name, purpose=body.reason, epsilon=body.epsilon, delta=body.delta)
    ledger = state.ledger(caller.access)
    ledger.set_budget(name, Budget(epsilon=body.epsilon, delta=body.delta), reason=body.reason)
    return ledger.status(name).to_dict()


@router.get(
    "/{name}/history",
    response_model=HistoryPage,
    summary="The ledger's history",
)
def history(
    *,
    name: DatasetName,
    request: Request,
    caller: Caller = needs(Permission.LEDGER_READ, dataset_param="name"),
    state: State,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_PAGE, description="Releases per page.")] = 100,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            le=2**62,
            description="Releases with seq above this, oldest first (the default: after=0).",
        ),
    ] = None,
    before: Annotated[
        int | None,
        Query(ge=1, le=2**62, description="Releases with seq below this, newest first."),
    ] = None,
    actor: Annotated[str | None, Query(max_length=256, description="Who charged.")] = None,
    purpose: Annotated[
        str | None,
        Query(max_length=MAX_PURPOSE_CHARS, description="A piece of the stated purpose."),
    ] = None,
    operation: Annotated[
        str | None,
        Query(max_length=32, description="query, training, mechanism, synthetic, ..."),
    ] = None,
    mechanism: Annotated[
        str | None,
        Query(max_length=64, description="A mechanism's name: laplace, gaussian, ..."),
    ] = None,
    since: Annotated[
        datetime | None,
        Query(description="Charged at or after this time (ISO 8601; no zone: UTC)."),
    ] = None,
    until: Annotated[
        datetime | None,
        Query(description="Charged before this time (ISO 8601; no zone: UTC)."),
    ] = None,
) -> dict[str, Any]:
    """Releases (paged by ``seq`` in the database, filtered) and every budget change.

    ``after`` pages forward (oldest first), ``before`` backward (newest first);
    without either the first page starts at the oldest release, as before filters
    existed. Pass a page's ``next_after`` (or ``next_before``) to get the next.
    """
    if after is not None and before is not None:
        raise InvalidInputError(
            "a page is asked for after a release or before one, not both",
            expected="?after= (forward, oldest first) or ?before= (backward, newest first)",
            got=f"after={after}, before={before}",
            fix="pass only the next_after or the next_before of the page you have",
        )
    if after is None and before is None:
        after = 0
    annotate(request, dataset=name, after=after, before=before, limit=limit)
    ledger = state.ledger(caller.access)
    page = ledger.releases(
        name,
        actor=actor,
        purpose=purpose,
        operation=operation,
        mechanism=mechanism,
        since=since,
        until=until,
        after=after,
        before=before,
        limit=limit,
    )
    shown = page.to_dict()
    return {
        "dataset": name,
        "releases": shown["items"],
        "budget_changes": ledger.budget_changes(name),
        "next_after": page.next_after,
        "next_before": page.next_before,
        "total": page.total,
        "order": page.order,
        "filters": shown["filters"],
    }


@router.get(
    "/{name}/burndown",
    response_model=BurnDownModel,
    summary="The budget over time",
)
def burndown(
    *,
    name: DatasetName,
    request: Request,
    caller: Caller = needs(Permission.LEDGER_READ, dataset_param="name"),
    state: State,
    points: Annotated[
        int,
        Query(ge=2, le=MAX_BURNDOWN_POINTS, description="About how many releases to sample."),
    ] = 200,
) -> dict[str, Any]:
    """Sampled releases (the first and the last always) with the spend after each: the
    ledger's PLD figure as stored when charged, and the RDP cross-check at the budget's
    delta; and every budget change."""
    annotate(request, dataset=name, points=points)
    return state.ledger(caller.access).burndown(name, points=points).to_dict()
