"""Retention: how long a managed dataset's rows may be kept, and the run that enforces it.

A policy is one of two kinds, per dataset:

* ``max_age``: rows whose ``date_column`` is older than ``days`` days are
  removed. A run writes a new version without them (an
  :class:`~veil.store.tables.ErasureRow` of kind ``retention``, no person),
  then destroys the old version's key. Rows with no date are kept (their age
  is unknown) and counted in the report.
* ``expire_on``: once the date has passed, every version is destroyed (keys
  and files). The dataset's registration, ledger and trail stay: they are the
  history of what was released, and a budget is never refunded.

:func:`run` is made for cron: it applies only what is due, so a second run
straight after the first writes nothing (idempotent), and it holds the
dataset's version lock (:mod:`veil.governance._lock`) from reading the current
version to committing the next, so two runs started together never both write a
version of the same dataset: the second reads what the first wrote and finds
nothing due. A dry run reads and reports, and writes nothing. Every run is one
``retention.run`` entry on the trail (a dry run's too), and each version it
writes is its own ``retention.apply`` entry, committed with the version.

Why dates are checked when the policy is set, not when it runs: a policy on a
column that holds no dates would fail at 3 a.m. in a cron log nobody reads; set
refuses it at once, with the value that did not parse.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from veil._validate import whole_number
from veil.access import Permission
from veil.data import DataUse
from veil.errors import InvalidInputError, NotFoundError
from veil.governance._common import BUDGET_NOTE, crash_point, require_managed
from veil.governance._dates import as_utc, parse_dates
from veil.governance._lock import dataset_lock
from veil.progress import ProgressCallback, emit
from veil.store.tables import DatasetRow, ErasureRow, RetentionPolicyRow

if TYPE_CHECKING:
    from veil.data import Catalog, DatasetInfo

__all__ = ["RetentionAction", "RetentionPolicy", "RetentionReport", "policies", "run", "set_policy"]

MAX_AGE = "max_age"
EXPIRE_ON = "expire_on"
# Longer ages name a cut-off before any date a column can hold (and past what a
# datetime can subtract): refused when set, so a typo cannot stop every later run.
MAX_AGE_DAYS = 1000 * 365


@dataclass(frozen=True)
class RetentionPolicy:
    """A dataset's retention policy, as stored."""

    dataset: str
    kind: str  # max_age | expire_on
    days: int | None
    date_column: str | None
    expire_on: datetime | None
    created_at: datetime
    created_by: str
    last_run_at: datetime | None
    last_result: dict[str, Any] | None

    def describe(self) -> str:
        """``rows older than 365 days by visit_date`` / ``everything after 2027-01-01``."""
        if self.kind == MAX_AGE or self.expire_on is None:
            return f"rows older than {self.days} days by {self.date_column}"
        return f"every version after {self.expire_on:%Y-%m-%d}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("expire_on", "created_at", "last_run_at"):
            value = out[key]
            out[key] = None if value is None else value.isoformat()
        out["policy"] = self.describe()
        return out


@dataclass(frozen=True)
class RetentionAction:
    """What a run did (or, dry, would do) to one dataset."""

    dataset: str
    kind: str
    due: bool
    applied: bool
    rows_removed: int = 0
    rows_kept: int = 0
    rows_without_date: int = 0
    from_version: int | None = None
    to_version: int | None = None
    destroyed_versions: tuple[int, ...] = ()
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["destroyed_versions"] = list(self.destroyed_versions)
        return out


@dataclass(frozen=True)
class RetentionReport:
    """One retention run: a line per policy, and whether anything was written."""

    at: datetime
    dry_run: bool
    actions: tuple[RetentionAction, ...] = field(default_factory=tuple)
    budget_note: str = BUDGET_NOTE

    @property
    def changed(self) -> list[str]:
        """The datasets the run changed (none on a dry run, none when nothing was due)."""
        return [a.dataset for a in self.actions if a.applied]

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "dry_run": self.dry_run,
            "changed": self.changed,
            "actions": [a.to_dict() for a in self.actions],
            "budget_note": self.budget_note,
        }


# ------------------------------------------------------------------ policies
def set_policy(
    catalog: Catalog,
    dataset: str,
    *,
    older_than_days: int | None = None,
    date_column: str | None = None,
    expire_on: datetime | date | str | None = None,
) -> RetentionPolicy:
    """Set (or replace) ``dataset``'s retention policy; recorded on the trail (``retention.set``).

    Exactly one of ``older_than_days`` with ``date_column``, or ``expire_on``.
    The date column must be in the schema and every present value must parse
    as a date: checked now, on the current version; nothing is written on a
    refusal. Needs ``dataset.erase`` on the dataset.

    Raises:
        PermissionDeniedError: The acting principal may not (recorded).
        ConflictError: A reference dataset.
        InvalidInputError, NotFoundError: A bad policy or column; nothing written.
    """
    access = catalog.access
    access.require(Permission.DATASET_ERASE, dataset, action="retention.set")
    info = catalog.get(dataset)
    require_managed(info, doing="a retention policy")
    if (older_than_days is None) == (expire_on is None):
        raise InvalidInputError(
            "a retention policy is a maximum age or an expiry date",
            expected="--older-than DAYS with --date-column COL, or --expire-on DATE (one of them)",
            got="both" if expire_on is not None else "neither",
            fix="for example --older-than 365d --date-column visit_date",
        )
    if older_than_days is not None:
        days = whole_number(older_than_days, "the maximum age in days")
        if days > MAX_AGE_DAYS:
            raise InvalidInputError(
                "the maximum age is longer than any date can be old",
                expected=f"at most {MAX_AGE_DAYS} days (1000 years)",
                got=f"{days} days",
                fix="for example --older-than 30y; to destroy the data on a date, --expire-on DATE",
            )
        if not date_column:
            raise InvalidInputError(
                "a maximum age needs the column that dates each row",
                expected="--date-column COL",
                got="no date column",
                fix="for example --older-than 365d --date-column visit_date",
            )
        if date_column not in info.schema.column_names:
            raise NotFoundError(
                f"'{dataset}' has no column '{date_column}'",
                expected=f"one of {', '.join(info.schema.column_names)}",
                got=repr(date_column),
                fix="name the column that records when each row was collected",
            )
        frame = catalog.load_frame(
            dataset,
            [date_column],
            use=DataUse.MAINTENANCE,
            purpose="retention policy: date check",
        )
        parse_dates(frame[date_column], date_column)
        fields: dict[str, Any] = {
            "kind": MAX_AGE,
            "days": days,
            "date_column": date_column,
            "expire_on": None,
        }
    elif expire_on is not None:
        if date_column:
            raise InvalidInputError(
                "an expiry date applies to the whole dataset, not by a column",
                expected="--expire-on DATE alone",
                got=f"--date-column {date_column}",
                fix="drop --date-column, or use --older-than with it",
            )
        fields = {
            "kind": EXPIRE_ON,
            "days": None,
            "date_column": None,
            "expire_on": as_utc(expire_on),
        }
    with catalog.store.session(lock=True) as session:
        row = session.get(RetentionPolicyRow, info.dataset_id, with_for_update=True)
        replaced = row is not None
        if row is None:
            row = RetentionPolicyRow(dataset_id=info.dataset_id)
            session.add(row)
        for key, value in fields.items():
            setattr(row, key, value)
        row.created_at = datetime.now(UTC)
        row.created_by = access.principal.name
        row.last_run_at = None
        row.last_result = None
        session.flush()
        policy = _policy(row, dataset)
        access.append(
            session,
            "retention.set",
            dataset=dataset,
            links={"dataset_id": info.dataset_id},
            details={**policy.to_dict(), "replaced": replaced},
        )
    return policy


def _policy(row: RetentionPolicyRow, name: str) -> RetentionPolicy:
    return RetentionPolicy(
        dataset=name,
        kind=row.kind,
        days=row.days,
        date_column=row.date_column,
        expire_on=row.expire_on,
        created_at=row.created_at,
        created_by=row.created_by,
        last_run_at=row.last_run_at,
        last_result=None if row.last_result is None else dict(row.last_result),
    )


def policies(catalog: Catalog) -> list[RetentionPolicy]:
    """The retention policies the acting principal may read (``consent.read``: owners, auditors).

    Retention records are consent records in the roles table: what is kept,
    and for how long. Datasets the principal may not read them on are left
    out, without a refusal.
    """
    with catalog.store.session() as session:
        rows = session.execute(
            select(RetentionPolicyRow, DatasetRow.name)
            .join(DatasetRow, DatasetRow.id == RetentionPolicyRow.dataset_id)
            .order_by(DatasetRow.name)
        ).all()
        found = [_policy(row, name) for row, name in rows]
    allows = catalog.access.allows
    return [p for p in found if allows(Permission.CONSENT_READ, p.dataset)]


# ------------------------------------------------------------------ running
def run(
    catalog: Catalog,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    progress: ProgressCallback | None = None,
) -> RetentionReport:
    """Apply every due policy (or, ``dry_run``, report what would be applied).

    Needs ``dataset.erase`` on every dataset with a policy, checked for all of
    them before anything is read. ``now`` (tests; default the current time)
    decides what is due. The run is recorded on the trail (``retention.run``)
    whatever it found; a version it writes is recorded with it
    (``retention.apply``).

    Raises:
        PermissionDeniedError: The acting principal may not apply one of the
            policies (recorded; nothing is done).
    """
    access = catalog.access
    at = datetime.now(UTC) if now is None else as_utc(now)
    found = _active_policies(catalog)
    for policy in found:
        access.require(Permission.DATASET_ERASE, policy.dataset, action="retention.run")
    if not dry_run:
        catalog.finish_shredding()
    actions: list[RetentionAction] = []
    for index, policy in enumerate(found):
        emit(progress, "retention", index, len(found), unit="datasets", detail=policy.dataset)
        info = catalog.get(policy.dataset)
        apply = _expire if policy.kind == EXPIRE_ON else _max_age
        actions.append(apply(catalog, info, policy, at, dry_run=dry_run))
    emit(progress, "retention", len(found), len(found), unit="datasets")
    report = RetentionReport(at=at, dry_run=dry_run, actions=tuple(actions))
    access.record(
        "retention.run",
        details={
            "dry_run": dry_run,
            "now": at.isoformat(),
            "policies": len(found),
            "due": [a.dataset for a in actions if a.due],
            "changed": report.changed,
            "rows_removed": sum(a.rows_removed for a in actions if a.applied),
        },
    )
    return report


def _active_policies(catalog: Catalog) -> list[RetentionPolicy]:
    """Every policy on a registered (not archived) dataset, by dataset name."""
    with catalog.store.session() as session:
        rows = session.execute(
            select(RetentionPolicyRow, DatasetRow.name, DatasetRow.registration_report)
            .join(DatasetRow, DatasetRow.id == RetentionPolicyRow.dataset_id)
            .order_by(DatasetRow.name)
        ).all()
        return [_policy(row, name) for row, name, report in rows if "archived" not in report]


def _max_age(
    catalog: Catalog, info: DatasetInfo, policy: RetentionPolicy, at: datetime, *, dry_run: bool
) -> RetentionAction:
    """Remove the rows older than the policy's age (a new version; the old one shredded)."""
    days, column = int(policy.days or 0), str(policy.date_column)
    try:
        cutoff = (at - timedelta(days=days)).replace(tzinfo=None)
    except OverflowError:  # a policy stored before MAX_AGE_DAYS: no date is that old
        cutoff = datetime(1, 1, 1, tzinfo=UTC).replace(tzinfo=None)
    day = cutoff.date().isoformat()
    with dataset_lock(catalog.store, int(info.dataset_id or 0), info.name):
        current = catalog.current_version(info.name)
        if current is None:  # destroyed by an expiry: nothing left to age out
            return RetentionAction(info.name, MAX_AGE, due=False, applied=False, note="no data")
        # A maintenance read: every row (no consent filter narrows the next version).
        frame = catalog.load_frame(
            info.name, use=DataUse.MAINTENANCE, purpose="retention: rows past their age"
        )
        dates = parse_dates(frame[column], column)
        old = (dates < cutoff).fillna(value=False).to_numpy(dtype=bool)
        removed = int(old.sum())
        found = RetentionAction(
            dataset=info.name,
            kind=MAX_AGE,
            due=removed > 0,
            applied=False,
            rows_removed=removed,
            rows_kept=len(frame) - removed,
            rows_without_date=int(dates.isna().sum()),
            from_version=current.version,
        )
        if removed == 0:
            return replace(found, note=f"no row before {day}")
        if dry_run:
            return replace(found, note=f"would remove the rows dated before {day}")
        reason = f"retention: rows older than {days} days by {column}"
        kept = frame.loc[~old].reset_index(drop=True)
        del frame

        def commit(session: Session, change: Any) -> None:
            _record(
                catalog,
                session,
                info,
                from_version=change.old.version,
                to_version=change.new.version,
                rows_removed=removed,
                reason=reason,
            )

        crash_point("retention.before_commit")
        change = catalog.replace_version(
            info.name,
            kept,
            reason=reason,
            action="retention.apply",
            on_commit=commit,
            shred=False,
        )
        crash_point(
            "retention.after_commit"
        )  # the new version is durable; the old one not shredded
        catalog.shred(info.name, change.old.version)
    return replace(
        found,
        applied=True,
        from_version=change.old.version,
        to_version=change.new.version,
        note=f"removed the rows dated before {day}",
    )


def _expire(
    catalog: Catalog, info: DatasetInfo, policy: RetentionPolicy, at: datetime, *, dry_run: bool
) -> RetentionAction:
    """Destroy every version once the expiry date has passed (the registration stays)."""
    expire_on = policy.expire_on
    if expire_on is None or at < expire_on:
        day = "-" if expire_on is None else f"{expire_on:%Y-%m-%d}"
        return RetentionAction(
            info.name, EXPIRE_ON, due=False, applied=False, note=f"expires on {day}"
        )
    day = f"{expire_on:%Y-%m-%d}"
    with dataset_lock(catalog.store, int(info.dataset_id or 0), info.name):
        current = catalog.current_version(info.name)
        if current is None:
            return RetentionAction(
                info.name,
                EXPIRE_ON,
                due=False,
                applied=False,
                note=f"expired on {day}: no data left",
            )
        live = tuple(v.version for v in catalog.versions(info.name) if v.state != "shredded")
        found = RetentionAction(
            dataset=info.name,
            kind=EXPIRE_ON,
            due=True,
            applied=False,
            rows_removed=int(current.n_rows),
            from_version=current.version,
            destroyed_versions=live,
        )
        if dry_run:
            return replace(found, note=f"would destroy every version (expired on {day})")
        reason = f"retention: the dataset expired on {day}"

        def commit(session: Session, _change: Any = None) -> None:
            _record(
                catalog,
                session,
                info,
                from_version=current.version,
                to_version=current.version,
                rows_removed=int(current.n_rows),
                reason=reason,
            )

        crash_point("retention.before_commit")
        catalog.destroy_versions(
            info.name, reason=reason, action="retention.apply", on_commit=commit
        )
    note = f"destroyed every version (expired on {day})"
    return replace(found, applied=True, note=note)


def _record(
    catalog: Catalog,
    session: Session,
    info: DatasetInfo,
    *,
    from_version: int,
    to_version: int,
    rows_removed: int,
    reason: str,
) -> None:
    """The retention's record, in the transaction that makes the change.

    An expiry leaves no new version: its record has ``to_version ==
    from_version`` and removes every row of it.
    """
    now = datetime.now(UTC)
    session.add(
        ErasureRow(
            dataset_id=info.dataset_id,
            kind="retention",
            person=None,
            reason=reason,
            from_version=from_version,
            to_version=to_version,
            rows_removed=rows_removed,
            at=now,
            actor=catalog.access.principal.name,
        )
    )
    row = session.get(RetentionPolicyRow, info.dataset_id)
    if row is not None:
        row.last_run_at = now
        row.last_result = {
            "from_version": from_version,
            "to_version": to_version,
            "rows_removed": rows_removed,
        }
