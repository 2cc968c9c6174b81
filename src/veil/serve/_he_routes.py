"""Encrypted inference over HTTP: the CKKS protocol of ``veil he`` as three endpoints.

The client holds the secret key; the service holds the weights and never sees
an input or an output in the clear:

- ``GET /v1/he/models``: the served programs (``<home>/he/<name>/``, see
  :mod:`veil.serve._he_store`) and each one's CKKS plan, which a client turns
  into keys with ``HEClient.generate(HEPlan.from_dict(plan))`` or ``veil he
  keygen --plan``, with the error bounds, the flooding noise and what a
  request is charged;
- ``POST /v1/he/{name}/contexts``: the client's public context
  (``application/octet-stream``), checked against the plan and stored under a
  random 128-bit id bound to the uploading service key;
- ``POST /v1/he/{name}/infer?context=ID``: an encrypted request in, the
  encrypted response out (both ``application/octet-stream``). Only the key
  that uploaded the context may use it; another key is told it does not
  exist (and the attempt is on the trail).

Each needs ``model.predict``. Uploads and inferences share the key's rate
limit with plaintext predictions (``predict:<key id>``, the model's policy
rate, or a stricter throttle), and inferences take records from the key's
count budget on the program's name (``queries_per_key``), before any
evaluation and after the request's shape has been checked; a request that
fails during evaluation gets them back. A program served under the same name
as a plaintext model shares that model's budget.

Sizes: a body beyond ``max_he_bytes`` is refused (413) by the gateway before
the route runs; an inference request beyond the smaller
``max_he_request_bytes`` (a :class:`ServeConfig` field, 16 MiB by default) is refused
here from its declared length, before it is looked at. A body that is not
``application/octet-stream`` is a 415, bytes that are not what they claim a 400.

Every response is re-randomised under the client's public key and, unless
the program's ``serve.json`` says otherwise, flooded with Gaussian noise
(:mod:`veil.he._harden`); the server checks that a vector request is a fresh
encryption at the plan's scale. The attack monitor cannot see encrypted
queries: only the count budget and the rate limit bound what a key learns.
CKKS evaluation takes up to seconds, so it runs in the thread pool, never on
the event loop.

The other limits are :class:`ServeConfig` fields too: ``max_he_request_bytes``
(16 MiB), ``he_context_ttl`` (seconds, one day) and ``he_contexts_per_key`` (4
per program). A client, in Python::

    import httpx
    from veil.he import HEClient, HEPlan

    api = httpx.Client(base_url="http://127.0.0.1:8700", headers={"Authorization": f"Bearer {key}"})
    served = {m["name"]: m for m in api.get("/v1/he/models").json()["models"]}
    client = HEClient.generate(HEPlan.from_dict(served["digits"]["plan"]))  # the secret stays here
    octets = {"Content-Type": "application/octet-stream"}
    context = api.post("/v1/he/digits/contexts", content=client.public_context(), headers=octets)
    answer = api.post(
        "/v1/he/digits/infer",
        params={"context": context.json()["context"]},
        content=client.encrypt(x),  # one input; client.encrypt(rows, layout="batch") for many
        headers=octets,
    )
    probabilities = client.predict(answer.content)
"""

from __future__ import annotations

import math
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from veil.access import Permission
from veil.errors import (
    BudgetExceededError,
    DataTooLargeError,
    InvalidInputError,
    NotFoundError,
    UnsupportedMediaTypeError,
    VeilError,
)
from veil.he.wire import check_layout, unpack
from veil.serve._auth import Caller, annotate, needs
from veil.serve._errors import ERROR_RESPONSES, ErrorBody
from veil.serve._he_store import (
    CONTEXT_ID,
    NAME,
    ContextStore,
    ProgramShelf,
    ServedProgram,
    check_context,
)
from veil.serve._state import ServeState, get_state

__all__ = ["HEContext", "HEModel", "HEModels", "router"]

_OCTETS = "application/octet-stream"
_PURPOSE = "encrypted inference"
_BINARY = {"schema": {"type": "string", "format": "binary"}}


router = APIRouter(prefix="/v1/he", tags=["encrypted inference"], responses=ERROR_RESPONSES)
State = Annotated[ServeState, Depends(get_state)]
ProgramName = Annotated[str, Path(pattern=NAME, description="A served HE program.")]


class HEPlanInfo(BaseModel):
    """What a client needs to make matching CKKS keys (``HEPlan.from_dict`` reads it whole)."""

    poly_modulus_degree: int
    coeff_mod_bit_sizes: list[int]
    scale_bits: int
    integer_bits: int
    depth: int
    galois_steps: list[int] = Field(description="The only rotations to make keys for.")
    layouts: list[str]
    input_dim: int
    output_dim: int
    magnitude: float
    input_limit: float
    output: str
    slots: int
    total_coeff_bits: int
    max_coeff_bits: int
    security_bits: int
    standard: str
    format: int


class HEModel(BaseModel):
    """A served program: its plan (for the client's keys), precision, noise and charges."""

    name: str
    plan: HEPlanInfo
    error_bound: dict[str, float] = Field(description="|decrypted - plaintext| per layout.")
    flood_sigma: float | None = Field(description="Gaussian noise added to every output.")
    max_error: dict[str, float] = Field(description="error_bound + 6 flood_sigma per layout.")
    charge: str = Field(description="'capacity': every input a request can carry is charged.")
    records_per_request: dict[str, int] = Field(
        description="'capacity': records charged per vector request and per batch group of "
        "N/2 inputs, whatever they hold; 'declared': per input the request declares."
    )
    max_context_bytes: int
    max_request_bytes: int
    context_ttl_seconds: float
    contexts_per_key: int


class HEModels(BaseModel):
    """Every served program (``GET /v1/he/models``)."""

    models: list[HEModel]


class HEContext(BaseModel):
    """A stored public context: its id, bound to the key that uploaded it, and its expiry."""

    context: str = Field(description="Pass as ?context= to infer.")
    model: str
    he_key_id: str = Field(description="The CKKS key id the context belongs to.")
    bytes: int
    expires: float = Field(description="Unix time after which the context is gone.")
    replaced: list[str] = Field(description="This key's older contexts removed to make room.")


# ----------------------------------------------------------------------------- per worker


class _HE:
    """The programs, the contexts and the limits of one worker (on ``app.state.veil_he``)."""

    def __init__(self, state: ServeState) -> None:
        home = state.workspace.home
        self.context_bytes = int(state.config.max_he_bytes)
        self.request_bytes = min(int(state.config.max_he_request_bytes), self.context_bytes)
        self.programs = ProgramShelf(home)
        self.contexts = ContextStore(
            home / "serve" / "he-contexts",
            ttl=float(state.config.he_context_ttl),
            per_key=int(state.config.he_contexts_per_key),
        )

    def describe(self, served: ServedProgram) -> HEModel:
        records = {"vector": served.capacity("vector"), "batch_group": served.capacity("batch")}
        if served.charge == "declared":
            records = {"vector": 1, "batch_input": 1}
        return HEModel(
            name=served.name,
            plan=HEPlanInfo(**served.plan.to_dict()),
            error_bound=served.bounds(),
            flood_sigma=served.flood_sigma,
            max_error=served.max_error(),
            charge=served.charge,
            records_per_request=records,
            max_context_bytes=self.context_bytes,
            max_request_bytes=self.request_bytes,
            context_ttl_seconds=self.contexts.ttl,
            contexts_per_key=self.contexts.per_key,
        )


_setup = threading.Lock()


def _he(request: Request, state: ServeState) -> _HE:
    found: _HE | None = getattr(request.app.state, "veil_he", None)
    if found is None:
        with _setup:
            found = getattr(request.app.state, "veil_he", None)
            if found is None:
                found = _HE(state)
                request.app.state.veil_he = found
    return found


def _octets(request: Request, limit: int, what: str) -> None:
    """415 for another content type; 413 when the declared length passes ``limit``."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != _OCTETS:
        raise UnsupportedMediaTypeError(
            f"{what} is sent as raw bytes",
            expected=f"Content-Type: {_OCTETS}",
            got=f"Content-Type: {kind or '(none)'}",
            fix=f"send the file's bytes with Content-Type: {_OCTETS}",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        _too_large(int(declared), limit, what)


def _too_large(size: int, limit: int, what: str) -> None:
    raise DataTooLargeError(
        f"{what} is too large",
        expected=f"at most {limit:,} bytes",
        got=f"{size:,} bytes",
        fix="send fewer inputs per batch request (or ask the operator for a larger limit)",
        details={"limit": limit},
    )


def _rate(state: ServeState, name: str, key_id: str) -> None:
    policy = state.policy.for_model(name, key_id)
    state.limits.hit(f"predict:{key_id}", state.limits.effective_rate(key_id, policy.rate))


def _request_records(served: ServedProgram, he_key_id: str, data: bytes) -> tuple[int, int, str]:
    """``(declared, charged, layout)`` of an encrypted request, checked before any work.

    The shape is checked as :class:`HEServer` will (key id, layout, count,
    ciphertexts), so that a malformed request is refused before it is charged.

    Raises:
        InvalidInputError: Not a request, for other keys, or of the wrong shape.
    """
    meta, sections = unpack(data, "request")
    if meta.get("key_id") != he_key_id:
        raise InvalidInputError(
            "the request was encrypted for other keys than this context's",
            expected=f"key id {he_key_id[:12]}...",
            got=f"key id {str(meta.get('key_id'))[:12]}...",
            fix="encrypt with the secret key whose public context you uploaded",
        )
    layout = str(meta.get("layout"))
    check_layout(layout, served.plan)
    count = meta.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidInputError(
            "the request holds no inputs", expected="a count of at least 1", got=repr(count)
        )
    width, slots = served.plan.input_dim, served.plan.slots
    if layout == "vector":
        groups, expected = 1, 1
        if count != 1:
            raise InvalidInputError("a vector request holds one input", got=f"count {count}")
    else:
        groups = math.ceil(count / slots)
        expected = groups * width
    if len(sections) != expected:
        raise InvalidInputError(
            "the request has the wrong number of ciphertexts",
            expected=f"{expected} for {count} input(s) in the {layout} layout",
            got=str(len(sections)),
        )
    charged = count if served.charge == "declared" else groups * served.capacity(layout)
    return count, charged, layout


# ----------------------------------------------------------------------------- routes


@router.get("/models", summary="Served HE programs and their CKKS plans")
def list_models(
    request: Request,
    state: State,
    caller: Caller = needs(Permission.MODEL_PREDICT),  # noqa: ARG001 - authenticates, authorizes
) -> HEModels:
    """Every program a client can make keys for, with its plan, error bounds and charges."""
    he = _he(request, state)
    models = []
    for name in he.programs.names():
        try:
            models.append(he.describe(he.programs.get(name)))
        except VeilError as exc:  # one broken folder must not hide the others
            state.log.warning("HE program %s is not served: %s", name, exc)
    annotate(request, purpose=_PURPOSE, models=len(models))
    return HEModels(models=models)


@router.post(
    "/{name}/contexts",
    status_code=201,
    summary="Upload a public CKKS context",
    openapi_extra={"requestBody": {"required": True, "content": {_OCTETS: _BINARY}}},
)
async def upload_context(
    name: ProgramName,
    request: Request,
    state: State,
    caller: Caller = needs(Permission.MODEL_PREDICT),
) -> HEContext:
    """Check a public context against the program's plan and keep it for this key."""
    he = _he(request, state)
    _octets(request, he.context_bytes, "a public context")
    data = await request.body()
    return await run_in_threadpool(
        _store_context, request=request, state=state, he=he, caller=caller, name=name, data=data
    )


def _store_context(
    *, request: Request, state: ServeState, he: _HE, caller: Caller, name: str, data: bytes
) -> HEContext:
    _rate(state, name, caller.key_id)
    if len(data) > he.context_bytes:
        _too_large(len(data), he.context_bytes, "a public context")
    served = he.programs.get(name)
    annotate(request, purpose=_PURPOSE, model=name, bytes=len(data))
    he_key_id, server = check_context(served, data)
    record, replaced = he.contexts.put(served, caller.key_id, he_key_id, data, server)
    annotate(request, context=record["context"], he_key_id=he_key_id, replaced=replaced)
    return HEContext(
        context=record["context"],
        model=name,
        he_key_id=he_key_id,
        bytes=len(data),
        expires=record["expires"],
        replaced=replaced,
    )


@router.delete(
    "/{name}/contexts/{context}", status_code=204, summary="Remove one of this key's contexts"
)
def delete_context(
    name: ProgramName,
    context: Annotated[str, Path(pattern=CONTEXT_ID)],
    request: Request,
    state: State,
    caller: Caller = needs(Permission.MODEL_PREDICT),
) -> Response:
    """Delete a context this key uploaded (another key's is 'not found')."""
    he = _he(request, state)
    served = he.programs.get(name)
    _owned(request, he, served, context, caller)
    he.contexts.remove(served, context)
    annotate(request, purpose=_PURPOSE, model=name, context=context)
    return Response(status_code=204)


def _owned(
    request: Request, he: _HE, served: ServedProgram, context: str, caller: Caller
) -> dict[str, Any]:
    """The record of ``context`` if ``caller`` uploaded it; 'not found' otherwise."""
    record = he.contexts.find(served, context)
    if record is None or record.get("key_id") != caller.key_id:
        annotate(
            request,
            context=context,
            refused="another key's context" if record is not None else "unknown or expired",
        )
        raise NotFoundError(
            f"no context {context} for {served.name!r} belongs to this key",
            expected="an id returned by POST /v1/he/{name}/contexts with this key, unexpired",
            got=context,
            fix="upload the public context again (contexts expire and are bound to the key "
            "that uploaded them)",
        )
    return record


@router.post(
    "/{name}/infer",
    summary="Evaluate the program on an encrypted request",
    response_class=Response,
    openapi_extra={"requestBody": {"required": True, "content": {_OCTETS: _BINARY}}},
    responses={
        200: {"content": {_OCTETS: _BINARY}, "description": "The encrypted response."},
        409: {"model": ErrorBody, "description": "The program changed since the upload (conflict)"},
    },
)
async def infer(
    name: ProgramName,
    request: Request,
    context: Annotated[str, Query(pattern=CONTEXT_ID, description="From POST .../contexts.")],
    state: State,
    caller: Caller = needs(Permission.MODEL_PREDICT),
) -> Response:
    """The encrypted response to an encrypted request (only the client can read either)."""
    he = _he(request, state)
    _octets(request, he.request_bytes, "an encrypted request")
    data = await request.body()
    return await run_in_threadpool(
        _infer,
        request=request,
        state=state,
        he=he,
        caller=caller,
        name=name,
        context=context,
        data=data,
    )


def _infer(
    *,
    request: Request,
    state: ServeState,
    he: _HE,
    caller: Caller,
    name: str,
    context: str,
    data: bytes,
) -> Response:
    _rate(state, name, caller.key_id)
    if len(data) > he.request_bytes:
        _too_large(len(data), he.request_bytes, "an encrypted request")
    served = he.programs.get(name)
    annotate(request, purpose=_PURPOSE, model=name, context=context, bytes=len(data))
    record = _owned(request, he, served, context, caller)
    server = he.contexts.server(served, record)
    declared, charged, layout = _request_records(served, str(record["he_key_id"]), data)
    policy = state.policy.for_model(name, caller.key_id)
    try:
        left = state.limits.spend(caller.key_id, name, charged, policy.queries_per_key)
    except BudgetExceededError as exc:
        if served.charge != "capacity":
            raise
        raise BudgetExceededError(
            exc.message,
            expected=exc.expected,
            got=exc.got,
            fix=f"a {layout} request is charged {charged} records whatever it holds (the "
            "service cannot see which slots are filled): use the vector layout "
            f"({served.capacity('vector')} records a request), or ask the operator to raise "
            f"queries_per_key for {name!r}",
            details=exc.details,
        ) from None
    try:
        response = server.infer(data)
    except Exception:  # nothing was answered: the records go back
        state.limits.refund(caller.key_id, name, charged)
        raise
    annotate(
        request,
        usage=(name, charged),
        layout=layout,
        records_declared=declared,
        records_charged=charged,
        flood_sigma=served.flood_sigma,
        infer_ms=round(server.timings.get("infer_s", 0.0) * 1000, 3),
    )
    headers = {"X-Veil-Records-Charged": str(charged)}
    if left is not None:
        headers["X-Veil-Records-Left"] = str(left)
    return Response(content=response, media_type=_OCTETS, headers=headers)
