"""Model serving over HTTP: the models a key may call, their policies, predictions and usage.

``POST /v1/models/{name}/predict`` runs, in this order, each step refusing
before the next one spends anything:

1. the key authenticated, the model loaded (404 for an unknown one) and
   ``model.predict`` checked on the dataset it was trained on
   (:func:`model_needs`): a key limited to one dataset calls only that
   dataset's models;
2. the caller's effective policy (``_policy``) and the key's request rate
   (``limits``: the policy's ``rate``, or the monitor's throttle while one lasts);
3. the body: at most ``max_batch`` records (413), each encoded as training
   encoded rows (400 naming the record and the column);
4. the key's count budget (``queries_per_key``: 403 ``budget_exceeded``), taken
   atomically for the request's records;
5. for ``private_label``, the privacy charge on the training set's ledger (one
   pure-epsilon Laplace event per answer, purpose ``prediction``, through the
   caller's own ledger: ``budget.spend`` on that dataset is needed) *before*
   any vote is counted;
6. the answer, shaped by the policy (``_defences``), and the monitor's look at
   the encoded rows and reported classes;
7. the request's trail entry (``annotate``): model, dataset, output, records,
   ledger event; ``usage`` adds the records to the key's durable count.

Private answers have two bounds: the training set's budget in the ledger bounds
what every key together may learn, and the key's count budget bounds its own
share at ``epsilon x queries_per_key`` (``epsilon_per_key`` in the policy a key
sees at ``GET /v1/models/{name}``).

A failure after step 4 gives the records back to the count budget before the
error leaves; a privacy charge is never given back (the ledger over-counts,
never under-counts). The monitor's reference rows (a sample of the training
set, read through the operator's catalogue and recorded) are fitted on the
first prediction of each loaded model.

**Threads.** A prediction of at most :data:`INLINE_RECORDS` records is answered on the
event loop when everything it needs is in this worker's memory: the key's token
verified before, its grants read less than ``Access.max_age`` ago and allowing the
call, the model loaded, the monitor's reference fitted, and the limits in memory
with the key's counter read. Anything else (a first-time key's scrypt, a database
read or write, a refusal to record, Redis, private labels and their ledger charge, a
larger batch) runs in the thread pool, as every other ``def`` route does. Each hop to
a thread and back costs a request more than its whole answer on a two-core machine,
where the threads also contend for the interpreter lock with the trail's flusher
(``docs/benchmarks.md``, the gateway's overhead).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Depends, Path, Request
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    model_validator,
)
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from veil.access import ROLE_PERMISSIONS, Permission
from veil.errors import BudgetExceededError, DataTooLargeError, InvalidInputError, VeilError
from veil.ledger import PrivacyEvent
from veil.serve._auth import (
    Caller,
    annotate,
    authenticate,
    cached_caller,
    forget_key,
    permission_extra,
)
from veil.serve._defences import answer_mechanism, private_labels, shape, vote_histogram
from veil.serve._errors import ERROR_RESPONSES
from veil.serve._policy import MAX_BATCH, ModelPolicy
from veil.serve._served import ServedModel
from veil.serve._state import ServeState, get_state
from veil.serve._watch_routes import add_watch_routes
from veil.store.tables import ServeUsageRow

__all__ = [
    "ModelDetail",
    "ModelList",
    "PredictBody",
    "PredictResponse",
    "UsageResponse",
    "router",
]

log = logging.getLogger("veil.serve")
router = APIRouter(prefix="/v1/models", tags=["models"], responses=ERROR_RESPONSES)

PURPOSE = "prediction"
MAX_COLUMNS = 4096
MAX_WIDTH = 1 << 20
REFERENCE_ROWS = 2000
# Records a prediction may hold and still be answered on the event loop (about 0.1 ms of
# encoding, model and monitor each); a larger batch is answered in a thread.
INLINE_RECORDS = 16

State = Annotated[ServeState, Depends(get_state)]
ModelName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="A trained model's name (`veil models list`).",
    ),
]
ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Value = (
    Annotated[str, StringConstraints(max_length=1000)] | StrictInt | StrictFloat | StrictBool | None
)


# ---------------------------------------------------------------- request and response models
class PredictBody(BaseModel):
    """Records to predict: ``records`` (columns by name) or ``inputs`` (encoded vectors), not both."""

    model_config = ConfigDict(extra="forbid")

    records: (
        Annotated[
            list[Annotated[dict[ColumnName, Value], Field(max_length=MAX_COLUMNS)]],
            Field(min_length=1, max_length=MAX_BATCH),
        ]
        | None
    ) = Field(
        default=None,
        description="Rows as {column: value}: every column of the model's `inputs.columns`, "
        "numbers for numeric columns (clamped to their bounds), a declared category for "
        "categorical ones, null for a missing value.",
    )
    inputs: (
        Annotated[
            list[Annotated[list[StrictFloat | StrictInt], Field(max_length=MAX_WIDTH)]],
            Field(min_length=1, max_length=MAX_BATCH),
        ]
        | None
    ) = Field(
        default=None,
        description="Vectors in the model's input space (`inputs.width` values in [-1, 1]).",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.records is None) == (self.inputs is None):
            raise ValueError("send exactly one of records or inputs")
        return self

    @property
    def count(self) -> int:
        return len(self.records if self.records is not None else self.inputs or [])


class TopClass(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    """One answer: its label, and the probabilities the policy lets out."""

    label: str
    top: list[TopClass] | None = Field(
        default=None, description="top_k: the k most probable classes (not renormalised)."
    )
    probabilities: dict[str, float] | None = Field(
        default=None, description="probabilities: every class's (shaped) probability."
    )


class PredictResponse(BaseModel):
    model: str
    output: Literal["label", "top_k", "probabilities", "private_label"]
    predictions: list[Prediction]
    records_left: int | None = Field(
        description="Records this key may still have answered by this model (null: no cap)."
    )
    epsilon_per_answer: float | None = Field(
        default=None, description="private_label: each answer's epsilon on the training set."
    )
    ledger_event: int | None = Field(
        default=None, description="private_label: the ledger event that paid for the answers."
    )


class ModelSummary(BaseModel):
    name: str
    dataset: str
    private: bool
    epsilon: float | str | None = Field(description="Training epsilon ('inf': not private).")
    architecture: str


class ModelList(BaseModel):
    models: list[ModelSummary]


class ModelDetail(BaseModel):
    name: str
    card: dict[str, Any] = Field(description="The model's privacy card (`veil models show`).")
    classes: list[str]
    inputs: dict[str, Any] = Field(description="width, shape, and columns for tabular models.")
    sisa: bool
    policy: dict[str, Any] = Field(description="The serving policy in force for this key.")


class UsageResponse(BaseModel):
    model: str
    key_id: str
    used: int = Field(description="Records this key has had answered by this model.")
    cap: int | None = Field(description="The key's count budget (null: no cap).")
    left: int | None


# ---------------------------------------------------------------- helpers
@dataclass(frozen=True)
class ModelCall:
    """An authenticated caller allowed to use the path's model, and the model."""

    caller: Caller
    model: ServedModel


def model_needs(permission: Permission) -> Any:
    """``needs(permission)`` checked on the dataset the path's model was trained on.

    :func:`~veil.serve._auth.needs` checks a permission on the workspace or on a
    dataset named in the path; a model's scope is its training set, known only
    once the model is read. So a key limited to one dataset may use that
    dataset's models and no other (403, recorded by ``Access.require``), and a
    workspace-wide key every model. An unknown model is a 404 after
    authentication, so a caller without a key learns nothing of the names.
    """

    def checked(request: Request, name: str, state: ServeState) -> ModelCall:
        caller = authenticate(request, state)
        model: ServedModel = state.models.get(name)
        caller.access.require(permission, model.dataset, action=f"serve:{permission.value}")
        return ModelCall(caller, model)

    async def dependency(request: Request, name: ModelName, state: State) -> ModelCall:
        # From memory on the event loop when it can be (see the module: "Threads"); else
        # in a thread, where a token's scrypt, a database read or a refusal's record wait.
        caller = cached_caller(request, state)
        model = None if caller is None else state.models.loaded(name)
        if caller is not None and model is not None:
            policy = caller.access.cached_policy()
            if policy is not None and policy.allows(permission, model.dataset):
                return ModelCall(caller, model)
        return await run_in_threadpool(checked, request, name, state)

    dependency.veil_permission = permission  # type: ignore[attr-defined]
    dependency.veil_dataset_param = None  # type: ignore[attr-defined]
    return Depends(dependency)


def reads_some_models() -> Any:
    """``model.read`` held on the workspace or on at least one dataset (the list is filtered).

    A key limited to one dataset lists that dataset's models; a key whose roles
    hold ``model.read`` nowhere is refused (403, recorded) as ``needs`` refuses.
    """

    def dependency(request: Request, state: State) -> Caller:
        caller = authenticate(request, state)
        held = caller.access.policy().grants
        if not any(Permission.MODEL_READ in ROLE_PERMISSIONS[role] for role, _ in held):
            caller.access.require(Permission.MODEL_READ, action="serve:model.read")
        return caller

    dependency.veil_permission = Permission.MODEL_READ  # type: ignore[attr-defined]
    dependency.veil_dataset_param = None  # type: ignore[attr-defined]
    return Depends(dependency)


def _policy(state: ServeState, caller: Caller, name: str) -> ModelPolicy:
    policy: ModelPolicy = state.policy.for_model(name, caller.key_id)
    return policy


_fit_lock = threading.Lock()


def _tried(model: ServedModel) -> bool:
    return model.monitor_fitted is not None


def _fit_reference(state: ServeState, model: ServedModel) -> None:
    """Give the monitor this model's reference rows, once per loaded model (a failure is logged)."""
    if _tried(model):
        return
    with _fit_lock:
        if _tried(model):
            return
        try:
            state.monitor.fit_reference(model.name, model.reference(REFERENCE_ROWS))
            model.monitor_fitted = True
        except VeilError as exc:
            # Too few rows, a removed dataset: the monitor still runs its other signals.
            log.warning("no monitor reference", extra={"model": model.name, "reason": exc.message})
            model.monitor_fitted = False


def _encode(model: ServedModel, body: PredictBody) -> Any:
    if body.records is not None:
        return model.encode(body.records)
    return model.inputs(body.inputs or [])


# ---------------------------------------------------------------- routes
@router.get(
    "",
    response_model=ModelList,
    openapi_extra=permission_extra(Permission.MODEL_READ),
    summary="The models this key may read",
)
def list_models(caller: Annotated[Caller, reads_some_models()], state: State) -> ModelList:
    cards = state.models.cards()
    return ModelList(
        models=[
            ModelSummary(
                name=c.model,
                dataset=c.dataset,
                private=c.private,
                epsilon=c.to_dict()["epsilon"],
                architecture=c.architecture,
            )
            for c in cards
            if caller.access.allows(Permission.MODEL_READ, c.dataset)
        ]
    )


@router.get(
    "/{name}",
    response_model=ModelDetail,
    openapi_extra=permission_extra(Permission.MODEL_READ),
    summary="A model's card, inputs and the serving policy for this key",
)
def show_model(
    name: ModelName,
    request: Request,
    call: Annotated[ModelCall, model_needs(Permission.MODEL_READ)],
    state: State,
) -> ModelDetail:
    caller, model = call.caller, call.model
    annotate(request, dataset=model.dataset, model=name)
    described = model.describe()
    return ModelDetail(
        name=name,
        card=model.card.to_dict(),
        classes=described["classes"],
        inputs=described["inputs"],
        sisa=described["sisa"],
        policy=_policy(state, caller, name).to_dict(),
    )


@router.post(
    "/{name}/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    openapi_extra=permission_extra(Permission.MODEL_PREDICT),
    summary="Predict, under this key's serving policy and budgets",
)
async def predict(
    name: ModelName,
    body: PredictBody,
    request: Request,
    call: Annotated[ModelCall, model_needs(Permission.MODEL_PREDICT)],
    state: State,
) -> PredictResponse:
    caller, model = call.caller, call.model
    policy = _policy(state, caller, name)
    inline = (
        body.count <= INLINE_RECORDS
        and policy.output != "private_label"
        and state.limits.in_memory(caller.key_id, name)
        and (_tried(model) or not policy.monitor.enabled)
    )
    if inline:
        return _predict(name, body, request, state, caller, model, policy)
    return await run_in_threadpool(_predict, name, body, request, state, caller, model, policy)


def _predict(  # noqa: PLR0917 - the route's values, passed on as they are
    name: str,
    body: PredictBody,
    request: Request,
    state: ServeState,
    caller: Caller,
    model: ServedModel,
    policy: ModelPolicy,
) -> PredictResponse:
    annotate(request, dataset=model.dataset, model=name, output=policy.output)
    state.limits.hit(
        f"predict:{caller.key_id}", state.limits.effective_rate(caller.key_id, policy.rate)
    )
    n = body.count
    if n > policy.max_batch:
        raise DataTooLargeError(
            f"too many records for one request to '{name}'",
            expected=f"at most {policy.max_batch} records (the policy's max_batch)",
            got=f"{n} records",
            fix=f"split them into requests of {policy.max_batch} or fewer",
            details={"max_batch": policy.max_batch, "records": n},
        )
    x = _encode(model, body)
    left = state.limits.spend(caller.key_id, name, n, policy.queries_per_key)
    try:
        response = _answer(
            state=state, caller=caller, model=model, policy=policy, x=x, request=request
        )
    except BaseException:
        state.limits.refund(caller.key_id, name, n)
        raise
    annotate(request, usage=(name, n), records=n)
    response.records_left = left
    return response


def _answer(
    *,
    state: ServeState,
    caller: Caller,
    model: ServedModel,
    policy: ModelPolicy,
    x: Any,
    request: Request,
) -> PredictResponse:
    if policy.output == "private_label":
        model.require_sisa()  # before the charge: a plain model has no votes to count
        epsilon = float(policy.epsilon or 0.0)
        event = PrivacyEvent(
            what=f"{len(x)} private labels from model {model.name}",
            mechanisms=(answer_mechanism(epsilon),) * len(x),
            operation="prediction",
            details={"model": model.name, "key_id": caller.key_id, "answers": len(x)},
        )
        receipt = state.ledger(caller.access).charge(model.dataset, event, purpose=PURPOSE)
        annotate(request, ledger_event=receipt.event_id, epsilon=epsilon)
        votes = model.shard_votes(x)
        index = private_labels(vote_histogram(votes, len(model.classes)), epsilon)
        predictions = [Prediction(label=model.classes[i]) for i in index]
        labels = index
        extra: dict[str, Any] = {"epsilon_per_answer": epsilon, "ledger_event": receipt.event_id}
    else:
        answers, labels = shape(model.proba(x), model.classes, policy)
        predictions = [Prediction.model_validate(a) for a in answers]
        extra = {}
    _observe(request, state=state, caller=caller, model=model, policy=policy, x=x, labels=labels)
    return PredictResponse(
        model=model.name,
        output=policy.output,  # type: ignore[arg-type]
        predictions=predictions,
        records_left=None,
        **extra,
    )


def _observe(
    request: Request,
    *,
    state: ServeState,
    caller: Caller,
    model: ServedModel,
    policy: ModelPolicy,
    x: Any,
    labels: Any,
) -> None:
    if not policy.monitor.enabled:
        return
    _fit_reference(state, model)
    try:
        alerts = state.monitor.observe(
            caller.key_id, caller.principal.name, model.name, x, labels, policy.monitor
        )
    except InvalidInputError as exc:
        # The monitor refuses rows it cannot compare (a reference of another width after a
        # retraining): the answer is still given, and the gap is logged for the operator.
        log.warning("monitor skipped a request", extra={"model": model.name, "reason": exc.message})
        return
    if any(alert.action == "suspend" for alert in alerts):
        # The key was just revoked here: refuse its next request in this worker at once
        # (the other workers see the revocation within Access.max_age).
        forget_key(request, state, caller.principal)


@router.get(
    "/{name}/usage",
    response_model=UsageResponse,
    openapi_extra=permission_extra(Permission.MODEL_PREDICT),
    summary="This key's count budget on a model: used and left",
)
def usage(
    name: ModelName,
    request: Request,
    call: Annotated[ModelCall, model_needs(Permission.MODEL_PREDICT)],
    state: State,
) -> UsageResponse:
    caller, model = call.caller, call.model
    annotate(request, dataset=model.dataset, model=name)
    cap = _policy(state, caller, name).queries_per_key
    if cap is None:
        with state.store.session() as session:
            used = session.scalar(
                select(ServeUsageRow.answered).where(
                    ServeUsageRow.key_id == caller.key_id, ServeUsageRow.model == name
                )
            )
        return UsageResponse(
            model=name, key_id=caller.key_id, used=int(used or 0), cap=None, left=None
        )
    try:
        left = int(state.limits.spend(caller.key_id, name, 0, cap))  # takes nothing: reads
    except BudgetExceededError as exc:  # the cap was lowered below what was used
        left = 0
        used_now = int(exc.details.get("used", cap))
        return UsageResponse(model=name, key_id=caller.key_id, used=used_now, cap=cap, left=left)
    return UsageResponse(model=name, key_id=caller.key_id, used=cap - left, cap=cap, left=left)


# Alerts, every key's usage and the audit report (veil.serve._watch_routes), same checks.
add_watch_routes(router, model_needs, ModelName, State)
