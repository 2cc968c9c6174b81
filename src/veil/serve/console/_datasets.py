"""The console's dataset pages: the list, one dataset's page, its query and budget forms.

Every page calls what the JSON API calls, with the same permission:

* ``GET /console/datasets``: :func:`veil.serve._query_routes.list_datasets`
  (``dataset.read_metadata``, any dataset), as ``GET /v1/datasets``.
* ``GET /console/datasets/{name}``: the declared schema (``GET /v1/datasets/{name}``);
  with ``ledger.read``, the budget (:meth:`Ledger.status` with the RDP cross-check),
  its burn-down (:meth:`Ledger.burndown`) and the releases, filtered and paged in
  the database (:meth:`Ledger.releases`); with ``consent.read``, consent and
  retention state of a managed dataset.
* ``POST /console/datasets/{name}/query``: the ``/v1`` query route's own function
  (``budget.spend``), so the charge, its ledger event and the request's trail
  details are those of ``POST /v1/datasets/{name}/query``.
* ``POST /console/datasets/{name}/budget``: the function behind
  ``PUT /v1/datasets/{name}/budget`` (``budget.set``, owners).

Nothing here reads a whole ledger: a page of releases and ~200 burn-down points
come from SQL, whatever the history's length.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Annotated, Any, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from veil.access import Permission
from veil.errors import BudgetExceededError, InvalidInputError, VeilError
from veil.ledger import ReleasePage
from veil.serve._auth import Caller, annotate
from veil.serve._errors import status_of
from veil.serve._query_routes import (
    BudgetBody,
    DatasetName,
    QueryBody,
    get_dataset,
    list_datasets,
)
from veil.serve._query_routes import query as v1_query
from veil.serve._query_routes import set_budget as v1_set_budget
from veil.serve._state import ServeState, get_state
from veil.serve.console._datasets_view import (
    FormError,
    ReleaseFilters,
    answer_table,
    budget_view,
    chart_view,
    consent_view,
    fmt_number,
    parse_form,
    release_rows,
    schema_rows,
)
from veil.serve.console._render import redirect, render
from veil.serve.console._session import Form, console_needs, form_data

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)

State = Annotated[ServeState, Depends(get_state)]
MECHANISMS: tuple[str, ...] = get_args(QueryBody.model_fields["mechanism"].annotation)
RELEASES_PER_PAGE = 50
CHART_POINTS = 200
DONE = {"budget": "The budget was set."}


# ---------------------------------------------------------------- pages
@router.get("/datasets")
def datasets_page(
    request: Request,
    caller: Annotated[Caller, console_needs(Permission.DATASET_READ_METADATA, any_dataset=True)],
    state: State,
) -> HTMLResponse:
    """The datasets the key may see, with a budget bar for each whose ledger it may read."""
    listed = list_datasets(caller=caller, state=state)["datasets"]
    for item in listed:
        item["view"] = None if item["budget"] is None else budget_view(item["budget"])
    return render(
        request,
        "datasets/list.html",
        caller=caller,
        title="Datasets",
        nav="datasets",
        datasets=listed,
        num=fmt_number,
    )


@router.get("/datasets/{name}")
def dataset_page(
    request: Request,
    name: DatasetName,
    caller: Annotated[
        Caller, console_needs(Permission.DATASET_READ_METADATA, dataset_param="name")
    ],
    state: State,
) -> HTMLResponse:
    """One dataset: schema, budget and burn-down, releases, consent and retention."""
    notice = DONE.get(request.query_params.get("done", ""))
    return _dataset_response(request, name, caller, state, notice=notice)


@router.get("/datasets/{name}/query")
def query_form(
    request: Request,
    name: DatasetName,
    caller: Annotated[Caller, console_needs(Permission.BUDGET_SPEND, dataset_param="name")],
    state: State,
) -> HTMLResponse:
    """The query form on its own (the dataset page carries it too)."""
    info = get_dataset(name=name, request=request, caller=caller, state=state)
    return _query_page(request, caller, state, info, form=_query_defaults(), status_code=200)


@router.post("/datasets/{name}/query")
def run_query(
    request: Request,
    name: DatasetName,
    caller: Annotated[Caller, console_needs(Permission.BUDGET_SPEND, dataset_param="name")],
    form: Annotated[Form, Depends(form_data)],
    state: State,
) -> HTMLResponse:
    """Run a DP query through the ``/v1`` route's function; show the answer or the refusal."""
    info = get_dataset(name=name, request=request, caller=caller, state=state)
    kept = {key: form.get(key, "") for key in ("sql", "epsilon", "delta", "purpose", "confidence")}
    kept["mechanism"] = form.get("mechanism", "auto")
    try:
        body = parse_form(
            QueryBody,
            kept,
            numbers={"epsilon": "0.5", "delta": "0 or 1e-6", "confidence": "0.95"},
            text=("sql", "purpose", "mechanism"),
        )
    except FormError as exc:
        request.state.error_code = "invalid_input"
        return _query_page(
            request, caller, state, info, form=kept, errors=exc.problems, status_code=422
        )
    try:
        answer = v1_query(name=name, body=body, request=request, caller=caller, state=state)
    except BudgetExceededError as exc:
        request.state.error_code = exc.code
        refusal = {
            "message": exc.message,
            "fix": exc.fix,
            "remaining": exc.details.get("remaining"),
            "budget": exc.details.get("budget"),
            "asked": {"epsilon": body.epsilon, "delta": body.delta},
        }
        return _query_page(
            request, caller, state, info, form=kept, refusal=refusal, status_code=status_of(exc)
        )
    except VeilError as exc:
        if _not_the_forms(exc):  # the service's failures and refusals render as its error page
            raise
        request.state.error_code = exc.code
        return _query_page(
            request,
            caller,
            state,
            info,
            form=kept,
            errors=[_problem_of(exc)],
            status_code=status_of(exc),
        )
    return _query_page(
        request, caller, state, info, form=kept, answer=answer_table(answer), status_code=200
    )


@router.post("/datasets/{name}/budget", response_model=None)
def set_budget(
    request: Request,
    name: DatasetName,
    caller: Annotated[Caller, console_needs(Permission.BUDGET_SET, dataset_param="name")],
    form: Annotated[Form, Depends(form_data)],
    state: State,
) -> Response:
    """Set the budget through ``PUT /v1/datasets/{name}/budget``'s function; back to the page."""
    kept = {key: form.get(key, "") for key in ("epsilon", "delta", "reason")}
    try:
        body = parse_form(
            BudgetBody, kept, numbers={"epsilon": "3", "delta": "1e-6"}, text=("reason",)
        )
    except FormError as exc:
        request.state.error_code = "invalid_input"
        return _dataset_response(
            request, name, caller, state, budget_form=kept, budget_errors=exc.problems, status=422
        )
    try:
        v1_set_budget(name=name, body=body, request=request, caller=caller, state=state)
    except VeilError as exc:
        if _not_the_forms(exc):
            raise
        request.state.error_code = exc.code
        return _dataset_response(
            request,
            name,
            caller,
            state,
            budget_form=kept,
            budget_errors=[_problem_of(exc)],
            status=status_of(exc),
        )
    return redirect(f"/console/datasets/{name}?done=budget")


# ---------------------------------------------------------------- the dataset page
def _dataset_response(
    request: Request,
    name: str,
    caller: Caller,
    state: ServeState,
    *,
    notice: str | None = None,
    budget_form: Mapping[str, str] | None = None,
    budget_errors: list[dict[str, Any]] | None = None,
    status: int = 200,
) -> HTMLResponse:
    info = get_dataset(name=name, request=request, caller=caller, state=state)
    access = caller.access
    context: dict[str, Any] = {
        "info": info,
        "columns": schema_rows(info["privacy_schema"]),
        "budget": None,
        "chart": None,
        "filters": None,
        "releases": None,
        "release_rows": [],
        "pager": {"newer": None, "older": None},
        "consent": None,
        "may": {
            "query": access.allows(Permission.BUDGET_SPEND, name),
            "set_budget": access.allows(Permission.BUDGET_SET, name),
        },
        "query_form": _query_defaults(),
        "mechanisms": MECHANISMS,
        "budget_form": budget_form or {},
        "budget_errors": budget_errors or [],
    }
    if access.allows(Permission.LEDGER_READ, name):
        ledger = state.ledger(access)
        filters = ReleaseFilters.parse(request.query_params)
        annotate(request, dataset=name, **filters.trail())
        context["budget"] = budget_view(ledger.status(name, cross_check=True).to_dict())
        if budget_form is None:
            context["budget_form"] = _budget_now(context["budget"])
        context["chart"] = chart_view(ledger.burndown(name, points=CHART_POINTS))
        context["filters"] = filters
        page = None
        if not filters.problems:
            try:
                page = ledger.releases(name, limit=RELEASES_PER_PAGE, **filters.query())
            except InvalidInputError as exc:  # e.g. until before since: the library says so
                filters.problems.append(_problem_of(exc))
        if page is None:
            status = max(status, HTTPStatus.BAD_REQUEST)
            request.state.error_code = "invalid_input"
        else:
            context["releases"] = page
            context["release_rows"] = release_rows(page.items)
            context["pager"] = _pager(name, filters, page)
    if access.allows(Permission.CONSENT_READ, name):
        context["consent"] = consent_view(state.catalog(access), info)
    return render(
        request,
        "datasets/detail.html",
        caller=caller,
        title=name,
        nav="datasets",
        notice=None if notice is None else {"kind": "ok", "text": notice},
        status_code=status,
        num=fmt_number,
        **context,
    )


def _budget_now(view: Mapping[str, Any]) -> dict[str, str]:
    """The budget form filled with the budget in force (an owner changes what is there)."""
    budget = view.get("budget") or {}
    if budget.get("kind") != "approx_dp":
        return {}
    return {"epsilon": f"{budget['epsilon']:g}", "delta": f"{budget['delta']:g}", "reason": ""}


def _not_the_forms(exc: VeilError) -> bool:
    """Whether ``exc`` is not about what the form says: a refusal of the caller (401, 403) or
    the service's own failure (5xx), rendered as the console's error page, not beside the form.
    """
    status = status_of(exc)
    return status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN) or status >= 500  # noqa: PLR2004


def _problem_of(exc: VeilError) -> dict[str, Any]:
    return {"message": exc.message, "expected": exc.expected, "got": exc.got, "fix": exc.fix}


def _pager(name: str, filters: ReleaseFilters, page: ReleasePage) -> dict[str, str | None]:
    base = f"/console/datasets/{name}"
    kept = filters.params()

    def url(**extra: int) -> str:
        return f"{base}?{urlencode({**kept, **extra})}#releases"

    return {
        "newer": None if page.next_after is None else url(after=page.next_after),
        "older": None if page.next_before is None else url(before=page.next_before),
    }


# ---------------------------------------------------------------- the query page
def _query_defaults() -> dict[str, str]:
    return {
        "sql": "",
        "epsilon": "0.5",
        "delta": "0",
        "purpose": "",
        "confidence": "0.95",
        "mechanism": "auto",
    }


def _query_page(
    request: Request,
    caller: Caller,
    state: ServeState,
    info: Mapping[str, Any],
    *,
    form: Mapping[str, str],
    status_code: int,
    answer: dict[str, Any] | None = None,
    refusal: dict[str, Any] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> HTMLResponse:
    return render(
        request,
        "datasets/query.html",
        caller=caller,
        title=f"Query {info['name']}",
        nav="datasets",
        status_code=status_code,
        info=info,
        query_form=form,
        mechanisms=MECHANISMS,
        answer=answer,
        refusal=refusal,
        errors=errors or [],
        left=_left(caller, state, str(info["name"]), answer),
        num=fmt_number,
    )


def _left(
    caller: Caller, state: ServeState, name: str, answer: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The budget as the query page shows it above the form (the answer's own, after one)."""
    if answer is not None:
        return dict(answer["budget"]) if answer.get("budget") else None
    if not caller.access.allows(Permission.LEDGER_READ, name):
        return None
    return budget_view(state.ledger(caller.access).status(name, cross_check=False).to_dict())
