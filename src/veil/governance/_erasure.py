"""Erasure: remove one person from a managed dataset, and destroy every readable copy of them.

The order of the steps is the guarantee (decision 3 and 5 of issue 23):

1. **Finish earlier shredding.** A crash after a previous version change left
   a superseded version with its key: destroy it first, so nothing older than
   the current version is readable when this erasure starts.
2. **Check.** The acting principal needs ``dataset.erase``; the dataset must
   be managed (Veil owns the only copy it can destroy); the person must have
   rows in the current version, compared by keyed token. Otherwise nothing is
   changed.
3. **New version.** The rows without the person are sealed under a new data
   key and made current in one transaction with the
   :class:`~veil.store.tables.ErasureRow` (the person's token, never the
   identifier) and the ``dataset.erase`` trail entry. A crash before the
   commit leaves the old version current; after it, the new one.
4. **Unlearn** (unless ``unlearn=False``): every SISA model derived from the
   dataset whose membership list holds the token retrains the shards that held
   the person and is tested for forgetting. This must happen now: the test
   scores the erased rows, which exist only while the old version's key does.
5. **Shred.** The old version's data key is destroyed and its file deleted:
   no copy of it can be decrypted again.

Models that are not SISA are marked, not changed: :func:`erase` lists them
with what to do (:mod:`veil.governance._lineage`). Budgets are never refunded:
the dataset keeps its id, ledger and budget across versions.

Why the version lock (:mod:`veil.governance._lock`) is held from reading the
rows to the commit: a retention run interleaved with an erasure would write
back a version computed from rows the erasure removed.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy.orm import Session

from veil.access import Permission
from veil.data import DataUse, canonical_person, person_key, person_token
from veil.errors import InvalidInputError, NotFoundError, VeilError
from veil.governance._common import BUDGET_NOTE, crash_point, require_managed, require_reason
from veil.governance._lineage import (
    ADVICE,
    DerivedArtifact,
    carried_erasures,
    derived_artifacts,
    model_kind,
    read_members,
)
from veil.governance._lock import dataset_lock
from veil.governance._match import rows_of_person
from veil.progress import ProgressCallback, emit
from veil.store.tables import ErasureRow
from veil.vault import KeyStore
from veil.workspace import Workspace

if TYPE_CHECKING:
    from veil.data import Catalog, DatasetInfo
    from veil.ledger import Ledger
    from veil.train import ModelRegistry

__all__ = ["AffectedArtifact", "ErasureReport", "erase", "person_key_of"]

TASK = "erase"
STEPS = 5


@dataclass(frozen=True)
class AffectedArtifact:
    """Something derived from the dataset that carried the erased person (or may have)."""

    kind: str  # model | anonymized | synthetic
    name: str
    model_kind: str | None  # sisa | dp | non-private, for models
    version: int | None
    carries_person: bool | None  # None: no membership list (may carry them)
    erased_people: int | None  # every erased person it still carries (None: unknown)
    action: str
    unlearned: dict[str, Any] | None = None  # what the unlearning reported

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ErasureReport:
    """What an erasure did: versions, rows, what still carries the person, what to do."""

    dataset: str
    person: str  # the keyed token; the identifier is never kept
    reason: str
    from_version: int
    to_version: int
    rows_removed: int
    rows_left: int
    shredded: bool
    affected: tuple[AffectedArtifact, ...] = field(default_factory=tuple)
    unlearning: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    budget_note: str = BUDGET_NOTE

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["affected"] = [a.to_dict() for a in self.affected]
        out["unlearning"] = list(self.unlearning)
        return out


def person_key_of(catalog: Catalog) -> bytes:
    """The persons key of the catalogue's workspace.

    From the catalogue's ``workspace`` when it has one, else the workspace of
    the current directory, else ``VEIL_KEY_PERSONS`` alone (a catalogue on a
    bare database, as tests and embedding programs use).
    """
    workspace = getattr(catalog, "workspace", None)
    if workspace is None:
        try:
            workspace = Workspace.locate()
        except NotFoundError:
            workspace = None
    if workspace is not None:
        return person_key(workspace)
    if os.environ.get("VEIL_KEY_PERSONS"):
        return KeyStore(Workspace.default_home() / "keys").get("persons", create=False)
    raise NotFoundError(
        "no persons key: an erasure finds the person by keyed token",
        expected="a workspace (its keys/persons.key) or VEIL_KEY_PERSONS",
        got="neither",
        fix="run inside the workspace (veil init), or set VEIL_KEY_PERSONS",
    )


def erase(
    catalog: Catalog,
    dataset: str,
    person: Any,
    *,
    reason: str,
    unlearn: bool = True,
    registry: ModelRegistry | None = None,
    ledger: Ledger | None = None,
    progress: ProgressCallback | None = None,
) -> ErasureReport:
    """Remove ``person`` from ``dataset``: a new version without them, the old key destroyed.

    Args:
        catalog: The workspace catalogue (its access is who acts).
        dataset: A managed dataset.
        person: The person's privacy-unit value (as in the data: ``7``, ``"P-0042"``).
            It is turned into a keyed token at once and never stored.
        reason: Why (the erasure record and the trail keep it).
        unlearn: Retrain and verify every SISA model that carries the person,
            while the erased rows are still readable.
        registry: The workspace's models (needed to find and unlearn them;
            omitted: models are not examined).
        ledger: The budget gate an unlearned DP ensemble's retrained stages are
            charged to (never a refund).
        progress: Receives progress events (one task, ``erase``).

    Raises:
        PermissionDeniedError: No ``dataset.erase`` on the dataset (recorded).
        ConflictError: A reference dataset; or another erasure or retention run
            holds the dataset.
        NotFoundError: The person has no rows in the current version.
        InvalidInputError: No reason, or a dataset with no privacy-unit column.
        In every case before the commit, nothing is changed.
    """
    access = catalog.access
    access.require(Permission.DATASET_ERASE, dataset, action="dataset.erase", purpose=reason)
    reason = require_reason(reason)
    info = catalog.get(dataset)
    require_managed(info, doing="erasure")
    unit = _unit(info)
    canonical_person(person)  # refuses a missing or empty identifier before any work
    dataset_id = int(info.dataset_id or 0)  # a registered dataset always has its id
    key = person_key_of(catalog)
    token = person_token(key, dataset_id, person)
    emit(progress, TASK, 0, STEPS, unit="steps", detail="finishing earlier shredding")
    catalog.finish_shredding(dataset)
    with dataset_lock(catalog.store, dataset_id, dataset):
        emit(progress, TASK, 1, STEPS, unit="steps", detail="reading the current version")
        frame = _load_current(catalog, dataset)
        mask = rows_of_person(frame[unit], person, key=key, dataset_id=dataset_id, token=token)
        removed = int(mask.sum())
        if removed == 0:
            raise NotFoundError(
                f"the person is not in '{dataset}'",
                expected=f"a {unit} value with rows in the current version",
                got="no row with that value (compared by keyed token)",
                fix="check the identifier; a person erased before has no rows left "
                "(see `veil trail show --action dataset.erase`)",
                details={"person": token},
            )
        kept = frame.loc[~mask].reset_index(drop=True)
        emit(progress, TASK, 2, STEPS, unit="steps", detail="sealing the new version")
        crash_point("erase.before_commit")

        def commit(session: Session, change: Any) -> None:
            session.add(
                ErasureRow(
                    dataset_id=dataset_id,
                    kind="erase",
                    person=token,
                    reason=reason,
                    from_version=change.old.version,
                    to_version=change.new.version,
                    rows_removed=removed,
                    actor=access.principal.name,
                )
            )

        change = catalog.replace_version(
            dataset,
            kept,
            reason=reason,
            action="dataset.erase",
            on_commit=commit,
            shred=False,
            details={"person": token, "rows_removed": removed},
        )
    crash_point("erase.after_commit")
    old, new = change.old.version, change.new.version
    rows_left = len(kept)
    del kept
    emit(progress, TASK, 3, STEPS, unit="steps", detail="unlearning models that carry the person")
    unlearned: list[dict[str, Any]] = []
    try:
        artifacts = derived_artifacts(catalog, dataset)
        if unlearn and registry is not None:
            names = _carrying_sisa(registry, artifacts, token)
            unlearned = _unlearn(
                catalog,
                registry,
                ledger,
                names,
                token=token,
                old_rows=frame,
                reason=reason,
                progress=progress,
            )
    finally:  # whatever happened to the models, the person's old rows go now
        del frame
        emit(progress, TASK, 4, STEPS, unit="steps", detail="destroying the old version's key")
        catalog.shred(dataset, old)
    emit(progress, TASK, STEPS, STEPS, unit="steps", detail="done")
    affected = _affected(
        catalog, registry, artifacts, token=token, old_version=old, unlearned=unlearned
    )
    return ErasureReport(
        dataset=dataset,
        person=token,
        reason=reason,
        from_version=old,
        to_version=new,
        rows_removed=removed,
        rows_left=rows_left,
        shredded=True,
        affected=tuple(affected),
        unlearning=tuple(unlearned),
    )


def _unit(info: DatasetInfo) -> str:
    unit = info.schema.privacy_unit
    if unit is None:
        raise InvalidInputError(
            f"'{info.name}' declares no privacy-unit column, so no row names a person",
            expected="a dataset with a privacy-unit column (the column that identifies a person)",
            got="one row per person, unnamed",
            fix=f"declare it: veil datasets update {info.name} --id COLUMN",
        )
    return unit


def _load_current(catalog: Catalog, dataset: str) -> pd.DataFrame:
    """Every row of the current version: a maintenance read, which no consent filter narrows.

    The new version is the whole table less one person; a consent filter here
    would drop everyone who has not consented (yet) from it, for good.
    """
    return catalog.load_frame(
        dataset, use=DataUse.MAINTENANCE, purpose="erasure: rewrite without the person"
    )


def _carrying_sisa(
    registry: ModelRegistry, artifacts: list[DerivedArtifact], token: str
) -> list[str]:
    names = []
    for artifact in artifacts:
        if artifact.kind != "model" or not registry.exists(artifact.name):
            continue
        folder = registry.root / artifact.name
        members = read_members(folder)
        if members is None or token not in members:
            continue
        if model_kind(folder, registry.card(artifact.name).to_dict()) == "sisa":
            names.append(artifact.name)
    return list(dict.fromkeys(names))


def _unlearn(
    catalog: Catalog,
    registry: ModelRegistry,
    ledger: Ledger | None,
    names: list[str],
    *,
    token: str,
    old_rows: pd.DataFrame,
    reason: str,
    progress: ProgressCallback | None,
) -> list[dict[str, Any]]:
    """Unlearn and verify each SISA model in ``names``, while the old version is readable.

    ``old_rows`` is the version the person was erased from: the membership
    test scores their rows, which exist nowhere else once its key is
    destroyed. A failure is reported beside the model, not raised: the erasure
    has committed, and the old key must still be destroyed (the person's data
    outweighs the check); the model stays listed as carrying them.
    """
    if not names:
        return []
    if ledger is None:
        return [
            {
                "model": name,
                "ok": False,
                "error": "no_ledger",
                "message": "no ledger was given to charge the retrained stages to",
            }
            for name in names
        ]
    from veil.governance._unlearning import unlearn_and_verify  # noqa: PLC0415 - torch

    results = []
    for name in names:
        try:
            outcome = unlearn_and_verify(
                catalog,
                ledger,
                registry,
                name,
                erased_frame=old_rows,
                erased_tokens={token},
                purpose=f"model-training: unlearning after erasure ({reason})",
                progress=progress,
            )
        except VeilError as error:
            results.append(
                {"model": name, "ok": False, "error": error.code, "message": error.message}
            )
            continue
        results.append({"model": name, "ok": True, **outcome.to_dict()})
    return results


def _affected(
    catalog: Catalog,
    registry: ModelRegistry | None,
    artifacts: list[DerivedArtifact],
    *,
    token: str,
    old_version: int,
    unlearned: list[dict[str, Any]],
) -> list[AffectedArtifact]:
    """Every artefact that carried the person, after unlearning, with what to do.

    A model is listed when its membership list holds the token, when it has
    no list (it may carry them), or when it was just unlearned (to say so).
    An anonymised file or synthetic release made from the version the person
    was erased from, or an earlier one, is listed: it has no membership list.
    """
    done = {u["model"]: u for u in unlearned}
    out: list[AffectedArtifact] = []
    seen: set[tuple[str, str]] = set()
    for artifact in reversed(artifacts):  # newest record of a name first
        if (artifact.kind, artifact.name) in seen:
            continue
        seen.add((artifact.kind, artifact.name))
        if artifact.version is not None and artifact.version > old_version:
            continue  # made after the person was gone
        if artifact.kind != "model":
            out.append(
                AffectedArtifact(
                    kind=artifact.kind,
                    name=artifact.name,
                    model_kind=None,
                    version=artifact.version,
                    carries_person=None,
                    erased_people=None,
                    action=ADVICE.get(artifact.kind, ADVICE["anonymized"]),
                )
            )
            continue
        if registry is None or not registry.exists(artifact.name):
            continue  # deleted since: nothing carries the person there
        members = read_members(registry.root / artifact.name)
        carries = None if members is None else token in members
        if carries is False and artifact.name not in done:
            continue
        carried = carried_erasures(catalog, registry, artifact.name)
        action = carried.advice
        result = done.get(artifact.name)
        if result is not None and result.get("ok") and not carries:
            verified = (result.get("verification") or {}).get("run")
            action = "unlearned" + (" and verified" if verified else " (not verified)")
        out.append(
            AffectedArtifact(
                kind="model",
                name=artifact.name,
                model_kind=carried.kind,
                version=artifact.version,
                carries_person=carries,
                erased_people=carried.erased_people if carried.members_known else None,
                action=action,
                unlearned=result,
            )
        )
    return out[::-1]
