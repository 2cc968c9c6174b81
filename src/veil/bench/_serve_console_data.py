"""The workspace ``veil bench serve --parts console`` serves: a ledger and a trail at scale.

Everything goes through the library's public calls, as an operator's commands would:
the catalogue registers Adult's training file as ``adult`` (with declared bounds);
:func:`veil.train.fit_private` trains ``adult-dp`` (DP logistic regression, one
charge); :meth:`veil.access.Access.create_key` makes one key per role; then

* **ledger events**: :meth:`veil.ledger.Ledger.charge_many` in batches, by three
  analyst keys in turn (so the releases page has actors to filter on). Each release is
  a COUNT, SUM or AVG query or a bare mechanism, drawn from a pool of 48 mechanisms with
  distinct parameters (Laplace, Gaussian, discrete Laplace, discrete Gaussian,
  subsampled Gaussian, (epsilon, delta)): every charge is composed onto the dataset's
  privacy-loss distribution and chained under the ledger's lock, and appends its
  ``privacy.charge`` trail entry, exactly as a query does. The pool (rather than fresh
  random parameters for every release) lets the ledger reuse each mechanism's
  distribution: building one costs 1-5 ms, composing it is what every charge pays.
* **trail entries**: :meth:`veil.access.Trail.append_many` in batches of 10,000 inside
  locked sessions, up to the requested total (the charges' own entries count): real
  ``serve.request`` bodies (predictions, queries, metadata reads, refusals) from a few
  dozen keys, each hashed into the chain and the Merkle tree, with signed heads.

A ``manifest.json`` beside the workspace (its tokens, names and build times) lets
``--reuse DIR`` serve the same workspace again without rebuilding.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from veil.errors import InvalidInputError
from veil.progress import ProgressCallback, emit

__all__ = ["DATASET", "MODEL", "ConsoleWorkspace", "build", "load", "sizes_now"]

DATASET = "adult"
MODEL = "adult-dp"
PURPOSES = (
    "statistics: weekly income report",
    "research: hours and income study",
    "benchmark: veil bench serve --parts console",
)
ANALYSTS = 3
TRAIL_BATCH = 10_000
_MANIFEST = "manifest.json"
_QUERIES = (
    "SELECT COUNT(*) FROM adult WHERE age > {k}",
    "SELECT SUM(hours_per_week) FROM adult WHERE education_num >= {m}",
    "SELECT AVG(age) FROM adult WHERE hours_per_week > {k}",
    "SELECT sex, COUNT(*) FROM adult WHERE age < {k} GROUP BY sex",
)


@dataclass
class ConsoleWorkspace:
    """A built workspace: where it is, its keys by role, its sizes and build times."""

    home: str
    tokens: dict[str, str]
    actors: dict[str, str]
    dataset: str = DATASET
    model: str = MODEL
    ledger_events: int = 0
    trail_entries: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        path = folder / _MANIFEST
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        path.chmod(0o600)  # it holds the workspace's keys


def load(folder: Path) -> ConsoleWorkspace:
    """The workspace an earlier run built in ``folder`` (``--reuse``)."""
    path = folder / _MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ConsoleWorkspace(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidInputError(
            "--reuse names a folder without a console benchmark workspace",
            expected=f"{path} written by an earlier `veil bench serve --parts console --reuse`",
            got=f"{type(exc).__name__}: {exc}",
            fix="pass a new or empty folder (it is built there and kept), or leave --reuse out",
        ) from None


def _mechanisms(rng: np.random.Generator) -> list[Any]:
    """48 mechanisms with distinct parameters: 100,000 of them compose to a few epsilon."""
    from veil.ledger import Mechanism  # noqa: PLC0415

    makers: list[Callable[[], Any]] = [
        lambda: Mechanism.laplace(scale=float(rng.uniform(700, 2700)), sensitivity=1.0),
        lambda: Mechanism.gaussian(sigma=float(rng.uniform(100, 400)), sensitivity=1.0),
        lambda: Mechanism.discrete_laplace(scale=float(rng.uniform(700, 2700)), sensitivity=1),
        lambda: Mechanism.discrete_gaussian(sigma=float(rng.uniform(100, 400)), sensitivity=1),
        lambda: Mechanism.subsampled_gaussian(
            float(rng.uniform(0.001, 0.01)), float(rng.uniform(7, 20)), int(rng.integers(1, 5))
        ),
        lambda: Mechanism.epsilon_delta(
            "sparse_vector", float(rng.uniform(3e-4, 1.2e-3)), float(rng.uniform(1e-14, 5e-14))
        ),
    ]
    return [makers[i % len(makers)]() for i in range(48)]


def _event(i: int, pool: list[Any]) -> Any:
    from veil.ledger import PrivacyEvent  # noqa: PLC0415

    mechanism = pool[i % len(pool)]
    if i % 10 == 9:  # noqa: PLR2004 - one release in ten is a bare mechanism
        return PrivacyEvent(f"bench mechanism {i}", (mechanism,), operation="mechanism")
    sql = _QUERIES[i % len(_QUERIES)].format(k=17 + i % 70, m=1 + i % 16)
    return PrivacyEvent(sql, (mechanism,), operation="query", details={"bench": i})


def _request(i: int, actors: list[tuple[str, str]]) -> dict[str, Any]:
    """A ``serve.request`` entry as the gateway writes it, one of five kinds in turn."""
    actor, key_id = actors[i % len(actors)]
    kind = i % 5
    route, method, status, dataset, extra = "/v1/models/{name}/predict", "POST", 200, None, {}
    purpose = ""
    if kind == 1:
        route, dataset, purpose = "/v1/datasets/{name}/query", DATASET, PURPOSES[i % 3]
        extra = {"epsilon": 0.01, "sql_sha256": f"{i:064x}"}
    elif kind == 2:  # noqa: PLR2004
        route, method, dataset = "/v1/datasets/{name}", "GET", DATASET
    elif kind == 3:  # noqa: PLR2004
        extra = {"model": MODEL, "records": 1 + i % 8}
    elif kind == 4 and i % 20 == 4:  # noqa: PLR2004 - some refusals
        status, extra = 429, {"code": "rate_limited"}
    return {
        "actor": actor,
        "action": "serve.request",
        "outcome": "refused" if status >= 400 else "allowed",  # noqa: PLR2004
        "purpose": purpose,
        "dataset": dataset,
        "details": {
            "method": method, "route": route, "status": status, "code": extra.pop("code", None),
            "request_id": f"{i:032x}", "key_id": key_id, "ms": round(2.0 + (i % 97) / 10, 3),
            **extra,
        },
    }  # fmt: skip


def build(  # noqa: PLR0915 - the steps, in the order they run
    folder: Path,
    train_file: Path,
    *,
    ledger_events: int,
    trail_entries: int,
    charge_batch: int = 500,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> ConsoleWorkspace:
    """Build the workspace in ``folder`` (see the module's text); time each step."""
    from veil.access import Access, Outcome, Trail  # noqa: PLC0415
    from veil.bench._common import ADULT_NUMERIC_BOUNDS  # noqa: PLC0415
    from veil.data import Catalog  # noqa: PLC0415
    from veil.ledger import Budget, Ledger  # noqa: PLC0415
    from veil.store import Store  # noqa: PLC0415
    from veil.train import DPConfig, ModelRegistry, fit_private  # noqa: PLC0415
    from veil.vault import KeyStore  # noqa: PLC0415
    from veil.workspace import Settings, Workspace, login_name  # noqa: PLC0415

    if ledger_events < 1 or trail_entries < ledger_events + 10:
        raise InvalidInputError(
            "bad console benchmark sizes",
            expected="--ledger-events >= 1 and --trail-entries above the ledger events "
            "(every charge writes a trail entry)",
            got=f"ledger events {ledger_events}, trail entries {trail_entries}",
        )
    seconds: dict[str, float] = {}
    home = folder / ".veil"
    workspace = Workspace.create(home)
    url = f"sqlite:///{workspace.sqlite_path}"
    store = Store.open(url, upgrade=True)
    vault = KeyStore.for_workspace(workspace)
    settings = Settings(url, None, login_name())
    access = Access(store, settings=settings, signing_key=vault.get("trail"))
    try:
        emit(progress, "console workspace", 0, 4, unit="steps", detail="dataset, model, keys")
        began = time.perf_counter()
        catalog = Catalog(store, settings, access=access, workspace=workspace)
        ledger = Ledger(store, settings, key=vault.get("ledger"), access=access)
        catalog.add(train_file, name=DATASET, format="adult", bounds=ADULT_NUMERIC_BOUNDS)
        ledger.set_budget(DATASET, Budget(epsilon=1000.0, delta=1e-5), reason=PURPOSES[2])
        fit_private(
            catalog, ledger, ModelRegistry.for_workspace(workspace), DATASET,
            DPConfig(epochs=1, batch_size=256, epsilon=1.0, delta=1e-6, learning_rate=0.5),
            name=MODEL, model="logreg", label="income", purpose=PURPOSES[2],
        )  # fmt: skip
        tokens: dict[str, str] = {}
        actors: dict[str, str] = {}
        key_ids: dict[str, str] = {}
        roles: list[tuple[str, str, str | None]] = [
            ("owner", "owner", None),
            ("auditor", "auditor", None),
        ]
        roles += [(f"analyst-{i}", "analyst", DATASET) for i in range(ANALYSTS)]
        roles += [(f"consumer-{i}", "consumer", None) for i in range(20)]
        for name, role, scope in roles:
            info, token = access.create_key(f"bench-{name}", role, scope, reason=PURPOSES[2])
            tokens[name], actors[name], key_ids[name] = token, info.principal, str(info.key_id)
        tokens["analyst"], actors["analyst"] = tokens["analyst-0"], actors["analyst-0"]
        seconds["setup"] = time.perf_counter() - began

        emit(progress, "console workspace", 1, 4, unit="steps", detail="ledger events")
        began = time.perf_counter()
        pool = _mechanisms(np.random.default_rng(seed))
        chargers = []
        for i in range(ANALYSTS):  # each analyst's key acts as its service, as VEIL_KEY would
            as_key = Settings(url, None, login_name(), service_key=tokens[f"analyst-{i}"])
            on_key = Access(store, settings=as_key, signing_key=vault.get("trail"))
            chargers.append(Ledger(store, as_key, key=vault.get("ledger"), access=on_key))
        charged = ledger.status(DATASET, cross_check=False).events  # the model's training
        before, batches = charged, 0
        while charged < ledger_events:
            # Small runs still give each analyst a share (and the releases page a second page).
            n = min(charge_batch, max(10, ledger_events // 12), ledger_events - charged)
            batch = [(DATASET, _event(charged + j, pool)) for j in range(n)]
            turn = batches % ANALYSTS
            batches += 1
            chargers[turn].charge_many(batch, purpose=PURPOSES[turn])
            charged += n
            emit(progress, "ledger events", charged, ledger_events, unit="events")
        seconds["ledger"] = time.perf_counter() - began

        emit(progress, "console workspace", 2, 4, unit="steps", detail="trail entries")
        began = time.perf_counter()
        trail = Trail(store, signing_key=vault.get("trail"))
        size = trail.head().size
        filled = size
        callers = [(actors[n], key_ids[n]) for n, _, _ in roles if n != "owner"]
        while size < trail_entries:
            n = min(TRAIL_BATCH, trail_entries - size)
            entries = [_request(size + j, callers) for j in range(n)]
            for e in entries:
                e["outcome"] = Outcome(e["outcome"])
            with store.session(lock=True) as session:
                trail.append_many(session, entries)
            size += n
            emit(progress, "trail entries", size, trail_entries, unit="entries")
        seconds["trail"] = time.perf_counter() - began
        emit(progress, "console workspace", 3, 4, unit="steps", detail="signing the head")
        trail.checkpoint()
        built = ConsoleWorkspace(
            home=str(home),
            tokens=tokens,
            actors=actors,
            ledger_events=charged,
            trail_entries=trail.head().size,
            seconds=seconds,
            rates={  # of the bulk steps (the model's charge and trail entries excluded)
                "charges_per_s": (charged - before) / max(seconds["ledger"], 1e-9),
                "trail_entries_per_s": (trail_entries - filled) / max(seconds["trail"], 1e-9),
            },
        )
        built.save(folder)
        emit(progress, "console workspace", 4, 4, unit="steps", detail="built")
        return built
    finally:
        store.dispose()


def sizes_now(home: Path) -> dict[str, int]:
    """The ledger events and trail entries in the workspace's database now (a reused one grows).

    Opening it upgrades a workspace an earlier Veil built to the current schema (the
    migrations, as ``veil db upgrade`` runs them): ``veil serve`` refuses an old one.
    """
    from sqlalchemy import func, select  # noqa: PLC0415

    from veil.store import Store  # noqa: PLC0415
    from veil.store.tables import PrivacyEventRow, TrailStateRow  # noqa: PLC0415

    store = Store.open(f"sqlite:///{home / 'veil.db'}", upgrade=True)
    try:
        with store.session() as session:
            events = session.scalar(select(func.count()).select_from(PrivacyEventRow))
            size = session.scalar(select(TrailStateRow.size).where(TrailStateRow.id == 1))
        return {"ledger_events": int(events or 0), "trail_entries": int(size or 0)}
    finally:
        store.dispose()


def folder_is_empty(folder: Path) -> bool:
    """Whether ``folder`` is missing or empty (a place to build in)."""
    if not folder.exists():
        return True
    with os.scandir(folder) as entries:
        return next(entries, None) is None
