"""A synthetic release: plan, check, charge, then fit and sample, with a card beside it.

The order is the one every Veil release follows (:mod:`veil.ledger._guard`):

1. the domain comes from the declared schema and the workload from it, the
   plan (every mechanism) from the budget: bad input is refused here, before
   anything is read or charged;
2. the gate previews the plan's event (a short budget refuses, nothing read);
3. the rows are read for the mechanism (recorded on the trail), one row per
   privacy unit kept, encoded;
4. the event is charged; only then does the first mechanism run;
5. the model is fitted and sampled. A run that stops (killed, interrupted)
   after the charge releases nothing, and the charge stands, as for any
   release that may have been computed.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from veil._io import atomic_path, write_json_atomic
from veil.errors import InvalidInputError
from veil.progress import ProgressCallback
from veil.synth._aim import RunTrace, candidates_of, run_aim, run_mst
from veil.synth._encode import DEFAULT_BINS, Encoder
from veil.synth._model import Model
from veil.synth._plan import SynthPlan, plan_for
from veil.synth._workload import DEFAULT_MAX_CELLS, workload_cliques

if TYPE_CHECKING:
    from veil.data import Catalog, PrivacySchema
    from veil.ledger import BudgetGuard, Receipt

__all__ = [
    "SynthCard",
    "SynthResult",
    "SynthSettings",
    "fit_nonprivate",
    "synthesize_dataset",
    "synthesize_frame",
    "write_release",
]

OUTPUT_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class SynthSettings:
    """How hard the generator works (none of these change the privacy guarantee).

    Attributes:
        rounds: AIM's selection rounds (default: one more than the number of columns).
            MST always selects ``columns - 1`` edges.
        iters: Mirror-descent iterations per refit (AIM). A model that has not
            converged gets the marginal it was just given wrong again, and AIM
            spends its next round measuring it a second time.
        final_iters: Iterations of the last fit (AIM, MST).
        max_model_mb: The largest model AIM may grow (MB of float64 clique tables).
        sample_rows: Rows sampled from the model to score marginals it does not hold.
    """

    rounds: int | None = None
    iters: int = 300
    final_iters: int = 1000
    max_model_mb: float = 2.0
    sample_rows: int = 50_000

    def rounds_for(self, method: str, columns: int) -> int:
        if method == "mst":
            return columns - 1
        return self.rounds if self.rounds is not None else columns + 1

    def check(self) -> None:
        for name in ("iters", "final_iters", "sample_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(
                    f"synthesis setting {name} must be a positive whole number",
                    expected=f"{name} >= 1",
                    got=repr(value),
                )
        if self.rounds is not None and (
            isinstance(self.rounds, bool)
            or not isinstance(self.rounds, int)
            or not 1 <= self.rounds <= 10_000  # noqa: PLR2004
        ):
            raise InvalidInputError(
                "the number of AIM rounds is out of range",
                expected="a whole number from 1 to 10,000",
                got=repr(self.rounds),
            )
        if not (math.isfinite(self.max_model_mb) and self.max_model_mb > 0):
            raise InvalidInputError(
                "the model size limit must be a positive number of megabytes",
                expected="max_model_mb > 0",
                got=repr(self.max_model_mb),
            )


@dataclass(frozen=True)
class SynthCard:
    """What a synthetic release is: shipped beside the data, like a model's privacy card."""

    method: str
    epsilon: float | None
    delta: float | None
    rho: float
    workload: str
    workload_cliques: int
    dataset: str
    dataset_sha256: str | None
    ledger_event: int | None
    rows: int
    columns: tuple[str, ...]
    plan: dict[str, Any]
    run: dict[str, Any]
    created: str
    private: bool = True
    domain: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from veil import __version__  # noqa: PLC0415

        return {
            "kind": "veil.synthetic-data",
            "veil": __version__,
            "private": self.private,
            "method": self.method,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "rho": self.rho,
            "workload": self.workload,
            "workload_cliques": self.workload_cliques,
            "dataset": self.dataset,
            "dataset_sha256": self.dataset_sha256,
            "ledger_event": self.ledger_event,
            "rows": self.rows,
            "columns": list(self.columns),
            "plan": self.plan,
            "run": self.run,
            "created": self.created,
            "domain": self.domain,
        }


@dataclass
class SynthResult:
    """A synthetic release (``data``), its cell codes, and how it was made."""

    data: pd.DataFrame
    codes: pd.DataFrame
    encoder: Encoder
    card: SynthCard
    workload: list[tuple[str, ...]]
    receipt: Receipt | None
    trace: RunTrace
    model: Model | None = None
    train: pd.DataFrame | None = None
    holdout: pd.DataFrame | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "card": self.card.to_dict(),
            "charged": None if self.receipt is None else self.receipt.to_dict(),
        }


@dataclass(frozen=True)
class _Prepared:
    encoder: Encoder
    cliques: list[tuple[str, ...]]
    plan: SynthPlan
    settings: SynthSettings
    workload_name: str


def _prepare(
    schema: PrivacySchema,
    *,
    method: str,
    epsilon: float | None,
    delta: float | None,
    rho: float | None,
    workload: str | Path,
    max_cells: int,
    columns: Sequence[str] | None,
    bins: int,
    integer: dict[str, bool],
    settings: SynthSettings,
    n_rows: int | None,
) -> _Prepared:
    settings.check()
    encoder = Encoder.from_schema(schema, bins=bins, columns=columns, integer=integer)
    cliques = workload_cliques(encoder.sizes, workload, max_cells=max_cells)
    d = len(encoder.columns)
    if method == "mst" and d < 2:  # noqa: PLR2004
        raise InvalidInputError(
            "MST needs at least two columns", expected=">= 2 columns", got=str(d)
        )
    rounds = settings.rounds_for(method, d)
    if method == "aim":
        weights = candidates_of(cliques)
        sensitivity, n_candidates = max(weights.values()), len(weights)
    else:
        sensitivity, n_candidates = 1.0, d * (d - 1) // 2
    plan = plan_for(
        method,  # type: ignore[arg-type]
        columns=d,
        rounds=rounds,
        candidates=n_candidates,
        sensitivity=sensitivity,
        epsilon=epsilon,
        delta=delta,
        rho=rho,
    )
    if n_rows is not None and plan.measure_sigma >= max(n_rows, 1):
        raise InvalidInputError(
            f"the budget is too small for {rounds} rounds: each measurement's noise "
            f"(sigma {plan.measure_sigma:,.0f}) exceeds the dataset's {n_rows:,} rows",
            expected="noise well below the number of rows",
            got=f"epsilon {epsilon}, delta {delta}, rho {rho}",
            fix="raise --epsilon, or lower --rounds (nothing was charged)",
        )
    return _Prepared(encoder, cliques, plan, settings, str(workload))


def _one_row_per_unit(
    frame: pd.DataFrame, unit: str | None, rng: np.random.Generator
) -> pd.DataFrame:
    """Keep one random row per privacy unit, so that one person changes each marginal by one."""
    if unit is None or unit not in frame.columns:
        return frame.reset_index(drop=True)
    order = rng.permutation(len(frame))
    shuffled = frame.iloc[order]
    return shuffled.drop_duplicates(subset=[unit], keep="first").reset_index(drop=True)


def _fit(
    prepared: _Prepared,
    codes: np.ndarray,
    *,
    rng: np.random.Generator,
    private: bool,
    progress: ProgressCallback | None,
    stop: Callable[[], None] | None,
) -> tuple[Model, RunTrace]:
    enc, s = prepared.encoder, prepared.settings
    if prepared.plan.method == "mst":
        return run_mst(
            codes,
            enc.columns,
            enc.sizes,
            prepared.plan,
            final_iters=s.final_iters,
            rng=rng,
            private=private,
            progress=progress,
            stop=stop,
        )
    return run_aim(
        codes,
        enc.columns,
        enc.sizes,
        prepared.cliques,
        prepared.plan,
        iters=s.iters,
        final_iters=s.final_iters,
        max_model_mb=s.max_model_mb,
        sample_rows=s.sample_rows,
        rng=rng,
        private=private,
        progress=progress,
        stop=stop,
    )


def _integer_columns(frame: pd.DataFrame) -> dict[str, bool]:
    """Numeric columns of an integer type (the column's type, not its values)."""
    return {c: pd.api.types.is_integer_dtype(frame[c]) for c in frame.columns}


def _split(
    frame: pd.DataFrame, holdout: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    if holdout == 0:
        return frame, None
    if not 0 < holdout < 1:
        raise InvalidInputError(
            "the held-out fraction must be between 0 and 1",
            expected="0 < holdout < 1 (e.g. 0.2)",
            got=repr(holdout),
        )
    order = rng.permutation(len(frame))
    cut = round(len(frame) * (1 - holdout))
    return (
        frame.iloc[np.sort(order[:cut])].reset_index(drop=True),
        frame.iloc[np.sort(order[cut:])].reset_index(drop=True),
    )


def _release(
    prepared: _Prepared,
    model: Model,
    trace: RunTrace,
    *,
    rows: int | None,
    rng: np.random.Generator,
    seed: int | None,
    dataset: str,
    sha256: str | None,
    receipt: Receipt | None,
    private: bool,
    train: pd.DataFrame,
    holdout: pd.DataFrame | None,
) -> SynthResult:
    n_out = int(rows) if rows is not None else max(round(model.total), 1)
    synth_codes = model.synthetic(rng, n_out)
    codes = pd.DataFrame(synth_codes, columns=list(prepared.encoder.columns))
    data = prepared.encoder.decode(codes, seed=None if seed is None else seed + 1)
    plan = prepared.plan
    card = SynthCard(
        method=plan.method,
        epsilon=plan.epsilon if private else None,
        delta=plan.delta if private else None,
        rho=plan.rho if private else math.inf,
        workload=prepared.workload_name,
        workload_cliques=len(prepared.cliques),
        dataset=dataset,
        dataset_sha256=sha256,
        ledger_event=None if receipt is None else receipt.event_id,
        rows=n_out,
        columns=prepared.encoder.columns,
        plan=plan.to_dict() if private else {"method": plan.method, "private": False},
        # The settings, then what the run did: its rounds, not the setting (None means the default).
        run={**prepared.settings.__dict__, **trace.to_dict()},
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        private=private,
        domain=prepared.encoder.to_dict(),
    )
    return SynthResult(
        data=data,
        codes=codes,
        encoder=prepared.encoder,
        card=card,
        workload=prepared.cliques,
        receipt=receipt,
        trace=trace,
        model=model,
        train=train,
        holdout=holdout,
    )


def synthesize_frame(
    frame: pd.DataFrame,
    schema: PrivacySchema,
    *,
    epsilon: float | None = None,
    delta: float | None = None,
    rho: float | None = None,
    method: str = "aim",
    rows: int | None = None,
    workload: str | Path = "3-way",
    max_cells: int = DEFAULT_MAX_CELLS,
    columns: Sequence[str] | None = None,
    bins: int = DEFAULT_BINS,
    guard: BudgetGuard | None = None,
    dataset: str = "local",
    purpose: str = "synthetic data",
    seed: int | None = None,
    holdout: float = 0.0,
    settings: SynthSettings | None = None,
    progress: ProgressCallback | None = None,
    stop: Callable[[], None] | None = None,
    dataset_sha256: str | None = None,
) -> SynthResult:
    """DP synthetic data from an in-memory frame, charged to ``guard`` before anything runs.

    Without a ``guard`` a :class:`~veil.ledger.LocalBudget` of exactly this
    release is used (a script's one-off). ``seed`` fixes post-processing
    (which row per person, the sample, the held-out split); the privacy noise
    is OpenDP's and is never seeded.
    """
    from veil.ledger import Budget, LocalBudget  # noqa: PLC0415

    settings = settings or SynthSettings()
    rng = np.random.default_rng(seed)
    prepared = _prepare(
        schema,
        method=method,
        epsilon=epsilon,
        delta=delta,
        rho=rho,
        workload=workload,
        max_cells=max_cells,
        columns=columns,
        bins=bins,
        integer=_integer_columns(frame),
        settings=settings,
        n_rows=len(frame),
    )
    event = prepared.plan.event(
        f"synthetic data ({method.upper()}, {prepared.workload_name} workload) of {dataset}",
        {
            "workload": prepared.workload_name,
            "bins": bins,
            "columns": list(prepared.encoder.columns),
        },
    )
    if guard is None:
        budget = Budget(rho=rho) if rho is not None else Budget(epsilon=epsilon, delta=delta)
        guard = LocalBudget(budget, dataset=dataset)
    guard.preview(dataset, event)
    kept = _one_row_per_unit(frame, schema.privacy_unit, rng)
    train, held = _split(kept, holdout, rng)
    codes = prepared.encoder.encode(train).to_numpy(dtype=np.int64)
    receipt = guard.charge(dataset, event, purpose=purpose)
    started = time.perf_counter()
    model, trace = _fit(prepared, codes, rng=rng, private=True, progress=progress, stop=stop)
    trace.notes.append(f"fit in {time.perf_counter() - started:.1f} s wall")
    return _release(
        prepared,
        model,
        trace,
        rows=rows,
        rng=rng,
        seed=seed,
        dataset=dataset,
        sha256=dataset_sha256,
        receipt=receipt,
        private=True,
        train=train,
        holdout=held,
    )


def fit_nonprivate(
    frame: pd.DataFrame,
    schema: PrivacySchema,
    *,
    method: str = "aim",
    rows: int | None = None,
    workload: str | Path = "3-way",
    max_cells: int = DEFAULT_MAX_CELLS,
    columns: Sequence[str] | None = None,
    bins: int = DEFAULT_BINS,
    seed: int | None = None,
    settings: SynthSettings | None = None,
) -> SynthResult:
    """The same generator without noise: exact marginals, argmax selection. A baseline to attack.

    Its plan is computed for a nominal budget (rho 1) only to fix the rounds and
    the model size schedule; no noise is drawn and nothing is charged. It is
    never a release: the audit attacks it beside the private one, to show the
    attack can see leakage when there is some.
    """
    settings = settings or SynthSettings()
    rng = np.random.default_rng(seed)
    prepared = _prepare(
        schema,
        method=method,
        epsilon=None,
        delta=None,
        rho=1.0,
        workload=workload,
        max_cells=max_cells,
        columns=columns,
        bins=bins,
        integer=_integer_columns(frame),
        settings=settings,
        n_rows=None,
    )
    kept = _one_row_per_unit(frame, schema.privacy_unit, rng)
    codes = prepared.encoder.encode(kept).to_numpy(dtype=np.int64)
    model, trace = _fit(prepared, codes, rng=rng, private=False, progress=None, stop=None)
    return _release(
        prepared,
        model,
        trace,
        rows=rows if rows is not None else len(kept),
        rng=rng,
        seed=seed,
        dataset="local",
        sha256=None,
        receipt=None,
        private=False,
        train=kept,
        holdout=None,
    )


def synthesize_dataset(
    catalog: Catalog,
    guard: BudgetGuard,
    dataset: str,
    *,
    epsilon: float | None = None,
    delta: float | None = None,
    rho: float | None = None,
    method: str = "aim",
    rows: int | None = None,
    workload: str | Path = "3-way",
    max_cells: int = DEFAULT_MAX_CELLS,
    columns: Sequence[str] | None = None,
    bins: int = DEFAULT_BINS,
    purpose: str = "synthetic data",
    seed: int | None = None,
    holdout: float = 0.0,
    settings: SynthSettings | None = None,
    progress: ProgressCallback | None = None,
    stop: Callable[[], None] | None = None,
) -> SynthResult:
    """DP synthetic data of a registered dataset, charged to the workspace ledger first.

    The acting principal must hold ``budget.spend`` on ``dataset`` (checked
    before anything else, refusal recorded). The rows are read for the
    mechanism, recorded on the trail with ``purpose``, and checked against the
    dataset's fingerprint.
    """
    from veil.access import Permission  # noqa: PLC0415
    from veil.data import DataUse  # noqa: PLC0415

    catalog.access.require(
        Permission.BUDGET_SPEND, dataset, action="privacy.charge", purpose=purpose
    )
    info = catalog.get(dataset)
    settings = settings or SynthSettings()
    # Refuse bad input and a short budget before reading: the plan needs only the schema.
    probe = _prepare(
        info.schema,
        method=method,
        epsilon=epsilon,
        delta=delta,
        rho=rho,
        workload=workload,
        max_cells=max_cells,
        columns=columns,
        bins=bins,
        integer={},
        settings=settings,
        n_rows=info.n_rows,
    )
    probe_event = probe.plan.event(f"synthetic data of {dataset}")
    guard.preview(dataset, probe_event)
    wanted = list(probe.encoder.columns)
    unit = info.schema.privacy_unit
    if unit is not None and unit not in wanted:
        wanted.append(unit)
    frame = catalog.load_frame(dataset, columns=wanted, use=DataUse.MECHANISM, purpose=purpose)
    return synthesize_frame(
        frame,
        info.schema,
        epsilon=epsilon,
        delta=delta,
        rho=rho,
        method=method,
        rows=rows,
        workload=workload,
        max_cells=max_cells,
        columns=columns,
        bins=bins,
        guard=guard,
        dataset=dataset,
        purpose=purpose,
        seed=seed,
        holdout=holdout,
        settings=settings,
        progress=progress,
        stop=stop,
        dataset_sha256=info.content_sha256,
    )


def write_release(result: SynthResult, path: str | Path) -> dict[str, str]:
    """Write the synthetic rows (CSV or Parquet, whole or not at all) and the card beside them.

    The card goes to ``PATH.card.json``; a Parquet file also carries it in its
    metadata (``veil.card``). Returns the paths written.
    """
    import json  # noqa: PLC0415

    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InvalidInputError(
            "unknown output format",
            expected="a path ending in .csv or .parquet",
            got=str(target),
            fix="name the output synth.csv or synth.parquet",
        )
    card = result.card.to_dict()
    card_path = target.with_name(target.name + ".card.json")
    with atomic_path(target, mode=None) as temporary:
        if suffix == ".csv":
            result.data.to_csv(temporary, index=False)
        else:
            import pyarrow as pa  # noqa: PLC0415
            import pyarrow.parquet as pq  # noqa: PLC0415

            table = pa.Table.from_pandas(result.data, preserve_index=False)
            meta = dict(table.schema.metadata or {})
            meta[b"veil.card"] = json.dumps(card).encode()
            pq.write_table(table.replace_schema_metadata(meta), temporary)
    write_json_atomic(card_path, card, mode=None)
    return {"data": str(target), "card": str(card_path)}
