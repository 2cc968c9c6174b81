"""``unlearn_and_verify``: retrain a SISA model without erased people, then test that it forgot.

Unlearning is :func:`veil.train.unlearn_sisa` (only the shards and slices that
held an erased person are retrained, from the checkpoint before them). The
verification is :func:`~veil.governance._forgetting.check_forgetting`: the
erased people's rows are scored by offline LiRA against the model before and
after, beside rows the model never saw (its registered test set).

The verification needs the erased rows themselves, and after an erasure they
exist only until the old version's key is destroyed: ``veil erase`` calls this
function between writing the new version and shredding the old one (passing
the old rows as ``erased_frame``), and ``veil unlearn`` finds a superseded
version that is not shredded yet. When neither is there, the report says that
verification was not run and why; it does not guess from other rows.

The outcome goes into the model's audit report (``audit-report.json`` and
``.html`` in the model folder, section "unlearning", every run kept) and on the
trail as ``model.unlearn.verify`` (numbers and verdict; no per-example score).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from veil.access import Outcome, Permission
from veil.errors import ConflictError, PermissionDeniedError, VeilError
from veil.governance._forgetting import ForgettingCheck, check_forgetting
from veil.governance._lineage import erased_tokens, model_kind, read_members
from veil.governance._references import sisa_trainer
from veil.progress import ProgressCallback

if TYPE_CHECKING:
    import pandas as pd

    from veil.data import Catalog, DatasetInfo
    from veil.ledger import Ledger
    from veil.train import ModelRegistry

__all__ = ["UnlearningReport", "unlearn_and_verify"]

REPORT_JSON = "audit-report.json"
REPORT_HTML = "audit-report.html"
DEFAULT_REFERENCES = 4
MAX_SCORED = 2000  # non-members scored (and erased rows, if more)
MAX_POPULATION = 20_000  # rows the reference models draw their halves from


@dataclass(frozen=True)
class UnlearningReport:
    """What ``unlearn_and_verify`` did: the retraining, and the membership test around it."""

    model: str
    dataset: str
    erased_people: int  # erased people the model carried, now unlearned
    unlearning: dict[str, Any]  # what unlearn_sisa reports (shards, slices, seconds, ledger)
    verification: ForgettingCheck | None
    not_verified: str | None  # why the membership test was not run (None when it ran)
    report: str | None  # the model's audit report (JSON) this run was added to
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """The verification's verdict, or ``not verified: <why>``."""
        if self.verification is None:
            return f"not verified: {self.not_verified}"
        return self.verification.verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "erased_people": self.erased_people,
            "unlearning": self.unlearning,
            "verification": self._verification(),
            "verdict": self.verdict,
            "report": self.report,
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }

    def _verification(self) -> dict[str, Any]:
        if self.verification is None:
            return {"run": False, "why": self.not_verified}
        return {"run": True, **self.verification.to_dict()}


@dataclass
class _Rows:
    """The scored rows and the reference models' population, encoded for the model."""

    erased_x: npt.NDArray[Any]
    erased_y: npt.NDArray[np.int64]
    erased_people: int
    non_x: npt.NDArray[Any]
    non_y: npt.NDArray[np.int64]
    population_x: npt.NDArray[Any]
    population_y: npt.NDArray[np.int64]


def _carried(catalog: Catalog, info: DatasetInfo, members: frozenset[str] | None) -> set[str]:
    if members is None or info.dataset_id is None:
        return set()
    with catalog.store.session() as session:
        return erased_tokens(session, info.dataset_id) & members


def _sample(n: int, cap: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    return np.arange(n) if n <= cap else np.sort(rng.choice(n, size=cap, replace=False))


def _tokens_of(registry: ModelRegistry, info: DatasetInfo, frame: pd.DataFrame) -> list[str]:
    from veil.data import person_tokens  # noqa: PLC0415 - pandas

    unit = info.schema.privacy_unit
    assert unit is not None  # noqa: S101 - a SISA model's dataset has a privacy unit
    assert info.dataset_id is not None  # noqa: S101 - checked by the caller
    return person_tokens(registry.person_key(), info.dataset_id, frame[unit].tolist())


def _encode(frame: pd.DataFrame, meta: dict[str, Any]) -> tuple[Any, Any]:
    """Rows as the model's inputs and class indices (its saved encoder and classes)."""
    from veil.train import FeatureEncoder  # noqa: PLC0415 - torch

    encoder = FeatureEncoder.from_dict(meta["encoder"])
    lookup = {str(c): i for i, c in enumerate(meta["classes"])}
    labels = frame[meta["label"]].astype(str)
    known = labels.isin(list(lookup)).to_numpy()  # a row without a known label cannot be scored
    inputs = encoder.encode(frame[known]).numpy()
    return inputs, np.asarray([lookup[v] for v in labels[known]], dtype=np.int64)


def _old_rows(
    catalog: Catalog, info: DatasetInfo, purpose: str
) -> tuple[pd.DataFrame | None, str | None]:
    """The newest superseded version that still has its key, or why there is none."""
    from veil.data import DataUse  # noqa: PLC0415

    versions = catalog.versions(info.name)
    if not versions:
        return None, (
            f"'{info.name}' is a reference dataset: Veil keeps no earlier version, so the "
            "erased people's rows cannot be read to test the model on them"
        )
    readable = [v for v in versions if v.state == "superseded"]
    if not readable:
        return None, (
            "the erased people's rows are no longer readable: the versions they were erased "
            "from were shredded (their keys destroyed), so no membership test can be run on them"
        )
    newest = max(readable, key=lambda v: v.version)
    frame = catalog.load_frame(
        info.name, use=DataUse.MECHANISM, purpose=purpose, version=newest.version
    )
    return frame, None


def _rows(
    catalog: Catalog,
    registry: ModelRegistry,
    info: DatasetInfo,
    meta: dict[str, Any],
    card: Any,
    *,
    old: pd.DataFrame,
    erased: set[str],
    members: frozenset[str],
    purpose: str,
    seed: int,
) -> tuple[_Rows | None, str | None]:
    """Encode the erased rows, the non-members and the population, or say why not."""
    from veil.data import DataUse  # noqa: PLC0415

    if not meta.get("encoder"):
        return None, "the model does not read table rows (no feature encoder): nothing to score"
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x0E2]))
    tokens = np.asarray(_tokens_of(registry, info, old))
    gone = np.isin(tokens, sorted(erased))
    if not gone.any():
        return None, "the rows given hold none of the erased people"
    # Non-members are the registered held-out set only. The dataset's other non-members are the
    # people who withheld consent for this use: scoring their rows would use them anyway.
    if not card.test_dataset:
        return None, "no held-out rows to compare with (train the model with --test DATASET)"
    test = catalog.load_frame(card.test_dataset, use=DataUse.MECHANISM, purpose=purpose)
    if len(test) < 2:  # noqa: PLR2004
        return None, "no held-out rows to compare with (train the model with --test DATASET)"
    test = test.iloc[_sample(len(test), MAX_SCORED, rng)]
    # The reference models train on the members still here *and* still consenting now: the
    # current version read through the consent filter, as the retraining reads it.
    current = catalog.load_frame(info.name, use=DataUse.MECHANISM, purpose=purpose)
    kept = np.isin(np.asarray(_tokens_of(registry, info, current)), sorted(members - erased))
    population = current[kept]
    population = population.iloc[_sample(len(population), MAX_POPULATION, rng)]
    erased_frame = old[gone]
    erased_frame = erased_frame.iloc[_sample(len(erased_frame), MAX_SCORED, rng)]
    ex, ey = _encode(erased_frame, meta)
    nx, ny = _encode(test, meta)
    px, py = _encode(population, meta)
    return _Rows(ex, ey, len(set(tokens[gone])), nx, ny, px, py), None


def _readable(  # noqa: PLR0917 - a private step of unlearn_and_verify
    catalog: Catalog,
    registry: ModelRegistry,
    info: DatasetInfo,
    meta: dict[str, Any],
    card: Any,
    erased_frame: pd.DataFrame | None,
    carried: set[str],
    members: frozenset[str],
    purpose: str,
    seed: int,
) -> tuple[_Rows | None, str | None]:
    """The rows to score, read before unlearning; or why there are none.

    A refusal to read (a consent rule on the test set, a version shredded
    meanwhile) is reported, not raised: the unlearning itself must still run.
    A missing permission is raised (and was recorded).
    """
    try:
        old = erased_frame
        if old is None:
            old, why = _old_rows(catalog, info, purpose)
            if old is None:
                return None, why
        return _rows(
            catalog,
            registry,
            info,
            meta,
            card,
            old=old,
            erased=carried,
            members=members,
            purpose=purpose,
            seed=seed,
        )
    except PermissionDeniedError:
        raise
    except VeilError as error:
        return None, f"the rows to score could not be read ({error.code}: {error.message})"


def _write_report(registry: ModelRegistry, model: str, card: Any, entry: dict[str, Any]) -> Path:
    """Add ``entry`` to the model's audit report (JSON and HTML), keeping earlier runs."""
    from veil._io import dumps, write_text_atomic  # noqa: PLC0415
    from veil.audit import AuditReport, render_html  # noqa: PLC0415

    folder = registry.path(model)
    path = folder / REPORT_JSON
    runs: list[dict[str, Any]] = []
    if path.is_file():
        try:
            runs = list(json.loads(path.read_text(encoding="utf-8")).get("unlearning", []))
        except ValueError:
            runs = []
    runs.append(entry)
    report = AuditReport(
        model=model,
        card=card.to_dict(),
        train=card.dataset,
        test=card.test_dataset or "-",
        settings={"references": entry.get("verification", {}).get("reference_models", 0)},
        unlearning=runs,
    )
    write_text_atomic(path, dumps(report.to_dict(), indent=1))
    write_text_atomic(folder / REPORT_HTML, render_html(report))
    return path


def unlearn_and_verify(
    catalog: Catalog,
    ledger: Ledger,
    registry: ModelRegistry,
    model_name: str,
    *,
    erased_frame: pd.DataFrame | None = None,
    erased_tokens: set[str] | frozenset[str] | None = None,
    purpose: str,
    references: int = DEFAULT_REFERENCES,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> UnlearningReport:
    """Unlearn every erased person ``model_name`` carries, and test that it forgot them.

    ``erased_tokens`` limits the people to unlearn (default: every erased
    person of the dataset in the model's membership list). ``erased_frame``
    holds their rows (the version they were erased from, before it is
    shredded); without it, a superseded version that still has its key is read.

    Raises:
        NotFoundError: No such model.
        ConflictError: The model is not a SISA ensemble (only those can unlearn).
        PermissionDeniedError: The acting principal may not retrain the model or
            read the rows to verify (recorded; nothing retrained).
    """
    started = time.perf_counter()
    access = catalog.access
    card = registry.card(model_name)
    folder = registry.path(model_name)
    kind = model_kind(folder, card.to_dict())
    if kind != "sisa":
        raise ConflictError(
            f"'{model_name}' is not a SISA ensemble: it cannot unlearn a person",
            expected="a model trained with --shards S (veil train ... --shards 20)",
            got=f"a {kind} model",
            fix="retrain it without the erased people (veil train ... on the current version), "
            "or retire it",
        )
    access.require(Permission.AUDIT_RUN, card.dataset, action="model.unlearn", purpose=purpose)
    info = catalog.get(card.dataset)
    members = read_members(folder) or frozenset()
    # The caller's tokens (an erasure passes the one it just recorded), else every erased
    # person of the dataset: either way only those the model still carries.
    carried = (
        _carried(catalog, info, members) if erased_tokens is None else set(erased_tokens) & members
    )
    if not carried:
        return UnlearningReport(
            model=model_name,
            dataset=card.dataset,
            erased_people=0,
            unlearning={},
            verification=None,
            not_verified="nothing to unlearn: the model carries no erased person",
            report=None,
            seconds=time.perf_counter() - started,
        )
    saved = registry.load(model_name)
    rows, why = _readable(
        catalog, registry, info, saved.meta, card, erased_frame, carried, members, purpose, seed
    )
    before = _classifier(saved)
    unlearned = _unlearn(catalog, ledger, registry, model_name, carried, purpose, progress)
    check = None
    if rows is not None:
        after = _classifier(registry.load(model_name))
        check, _ = check_forgetting(
            before,
            after,
            _reference_trainer(registry.load(model_name)),
            population_x=rows.population_x,
            population_y=rows.population_y,
            erased_x=rows.erased_x,
            erased_y=rows.erased_y,
            erased_people=rows.erased_people,
            non_x=rows.non_x,
            non_y=rows.non_y,
            references=references,
            seed=seed,
            progress=progress,
        )
    notes = []
    if rows is not None and rows.erased_people < len(carried):
        notes.append(
            f"rows of {rows.erased_people} of the {len(carried)} erased people were readable "
            "(the others' versions were shredded): the test covers those"
        )
    result = UnlearningReport(
        model=model_name,
        dataset=card.dataset,
        erased_people=len(carried),
        unlearning=unlearned,
        verification=check,
        not_verified=why,
        report=None,
        seconds=time.perf_counter() - started,
        notes=notes,
    )
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **result.to_dict()}
    path = _write_report(registry, model_name, registry.card(model_name), entry)
    result = _with_report(result, path)
    access.record(
        "model.unlearn.verify",
        dataset=card.dataset,
        purpose=purpose,
        outcome=Outcome.ALLOWED,
        links={"model": model_name, "report": str(path)},
        details={
            "erased_people": len(carried),
            "verification": result.to_dict()["verification"],
            "verdict": result.verdict,
        },
    )
    return result


def _with_report(result: UnlearningReport, path: Path) -> UnlearningReport:
    from dataclasses import replace  # noqa: PLC0415

    return replace(result, report=str(path))


def _classifier(saved: Any) -> Any:
    from veil.audit import as_classifier  # noqa: PLC0415

    return as_classifier(saved.model)


def _reference_trainer(saved: Any) -> Any:
    return sisa_trainer(saved.meta)


def _unlearn(  # noqa: PLR0917 - a private helper, called once
    catalog: Catalog,
    ledger: Ledger,
    registry: ModelRegistry,
    model: str,
    tokens: set[str],
    purpose: str,
    progress: ProgressCallback | None,
) -> dict[str, Any]:
    from veil.train import unlearn_sisa  # noqa: PLC0415 - torch

    outcome = unlearn_sisa(
        catalog, ledger, registry, model, tokens, purpose=purpose, progress=progress
    )
    return outcome.to_dict()
