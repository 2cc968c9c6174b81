"""The dataset catalogue: registering data with its privacy schema, and loading it back.

Registration streams through the whole source once, chunk by chunk, so even a
file larger than memory can be registered. It checks every declared fact
against every row (bounded columns are numeric, categorical values are among
the declared categories, the privacy-unit column has no gaps), records a
SHA-256 fingerprint of the bytes, and writes one row in one transaction only
after all checks passed: a refused registration changes nothing.

Loading re-checks the fingerprint, so an analysis never silently runs on data
other than what was registered, and refuses data whose estimated size would
not fit in memory before reading any of it.

A registration can be fixed (:meth:`Catalog.update` re-declares bounds,
categories and roles after checking every row again) and removed
(:meth:`Catalog.remove`). The privacy budget belongs to the data, not to the
name: a dataset with ledger history is archived, not deleted; the same bytes
registered again rejoin that history, and under a second name while a first
registration is active they are refused (:mod:`veil.data._archive`;
:func:`veil.store.tables.same_data_names` lets the ledger refuse a budget to a
registration whose bytes another one shares, left by workspaces registered
before this rule).

**Who may do what.** Every method checks the acting principal's role first
(:class:`veil.access.Access`): registering, updating and removing need
``dataset.register`` (owners), and each is recorded on the trail in the
transaction that writes it, so the entry commits with the change. Reading a
registration's metadata needs ``dataset.read_metadata`` and is not recorded.
Loading rows is recorded (``dataset.read``) before a byte is read, and needs
what the rows are for (:class:`DataUse`): ``raw`` rows for the caller
(``dataset.read_rows``, owners only), or ``mechanism``, rows a DP mechanism or
an audit reads on the caller's behalf and never hands back
(``dataset.use``).

The streaming checks are :func:`veil.data._scan.scan_source`; the stored record
is :class:`~veil.data.DatasetInfo` (:mod:`veil.data._dataset_info`); archiving
and rejoining are :mod:`veil.data._archive`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from veil.access import Access, Permission
from veil.data._archive import (
    ARCHIVED,
    archive,
    governance_history,
    ledger_history,
    lock_digest,
    registered_name,
    rejoin,
    same_data,
)
from veil.data._catalog_trail import DataUse, check_use, record_change, record_read
from veil.data._consent_rule import catalog_person_key, consent_rule
from veil.data._dataset_info import DatasetInfo
from veil.data._managed import (
    ManagedFiles,
    WrittenVersion,
    crash_point,
    frame_dtypes,
    refuse_images,
)
from veil.data._persons import person_tokens
from veil.data._scan import scan_source
from veil.data._schema import check_columns_exist
from veil.data._version_reader import VersionReader
from veil.data._version_removal import VersionRemoval
from veil.data.readers import ImageArrays, MnistReader, Reader, check_fits_in_memory, open_reader
from veil.errors import ConflictError, InvalidInputError, NotFoundError
from veil.progress import ProgressCallback
from veil.store import Store
from veil.store.tables import DatasetRow, DatasetVersionRow, ErasureRow
from veil.vault import MasterKey
from veil.workspace import Settings, Workspace, login_name

__all__ = ["Catalog", "DataUse"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # never holds ARCHIVED's ``~``


class Catalog(VersionRemoval):
    """Datasets registered in a workspace.

    Args:
        store: The workspace database.
        settings: Workspace settings (memory limit; the acting account when
            ``access`` is omitted); defaults apply if omitted.
        access: Who acts, their roles and the trail every change and load is
            recorded on. Omitted: the principal ``settings`` name (else the
            operating-system account), with an unsigned trail.
        workspace: Where managed datasets keep their sealed versions and the
            vault (:mod:`veil.data._managed`); located from the current
            directory when a managed dataset needs it and none was given.
        master_key: The vault's master key for managed datasets; omitted, it
            is read from ``VEIL_VAULT_KEY`` / ``VEIL_VAULT_PASSPHRASE`` when
            first needed (:meth:`veil.vault.MasterKey.from_env`).

    The version operations of managed datasets (``versions``,
    ``current_version``, ``replace_version``, ``shred``, ``finish_shredding``,
    ``destroy_versions``) are :class:`veil.data._versions.ManagedVersions`.
    """

    def __init__(
        self,
        store: Store,
        settings: Settings | None = None,
        *,
        access: Access | None = None,
        workspace: Workspace | None = None,
        master_key: MasterKey | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or Settings(
            database_url=store.display_url, max_load_bytes=None, actor=login_name()
        )
        self.access = access or Access(store, settings=settings)
        self.workspace = workspace
        self.master_key = master_key
        self._managed_files: ManagedFiles | None = None

    @classmethod
    def open(cls, workspace: Workspace | None = None) -> Catalog:
        """The catalogue of ``workspace`` (located from the current directory if omitted)."""
        workspace = workspace or Workspace.locate()
        store = Store.for_workspace(workspace)
        access = Access.open(workspace, store=store)
        return cls(store, workspace.settings, access=access, workspace=workspace)

    # ---------------------------------------------------------------- reading
    def list(self, *, archived: bool = False) -> list[DatasetInfo]:
        """The datasets whose metadata the acting principal may read, by name.

        ``archived=True``: the removed ones kept for their ledger. Datasets the
        principal may not see are left out, without a refusal.
        """
        with self.store.session() as session:
            rows = session.scalars(select(DatasetRow).order_by(DatasetRow.name)).all()
            live = select(DatasetVersionRow.dataset_id, DatasetVersionRow.version)
            pairs = session.execute(live.where(DatasetVersionRow.state == "current")).all()
            current = {int(d): int(v) for d, v in pairs}
            infos = [DatasetInfo.from_row(row, version=current.get(row.id)) for row in rows]
        allows = self.access.allows
        return [
            info
            for info in infos
            if (info.archived is not None) == archived
            and allows(Permission.DATASET_READ_METADATA, registered_name(info))
        ]

    def get(self, name: str) -> DatasetInfo:
        """The dataset called ``name`` (needs ``dataset.read_metadata`` on it).

        Raises:
            PermissionDeniedError: The acting principal may not read its
                metadata (recorded on the trail).
            NotFoundError: No such dataset (the message names the closest one).
        """
        self.access.require(Permission.DATASET_READ_METADATA, name, action="dataset.metadata")
        return self._get(name)

    def _get(self, name: str) -> DatasetInfo:
        """The dataset called ``name``, with no role check (callers check first)."""
        with self.store.session() as session:
            row = session.scalars(select(DatasetRow).where(DatasetRow.name == name)).one_or_none()
            if row is not None and "archived" not in row.registration_report:
                version = session.scalar(
                    select(DatasetVersionRow.version).where(
                        DatasetVersionRow.dataset_id == row.id,
                        DatasetVersionRow.state == "current",
                    )
                )
                return DatasetInfo.from_row(row, version=version)
            names = [n for n in session.scalars(select(DatasetRow.name)).all() if ARCHIVED not in n]
        import difflib  # noqa: PLC0415 - only on the error path

        close = difflib.get_close_matches(name, names, n=1)
        raise NotFoundError(
            f"no dataset named '{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""),
            expected="the name of a registered dataset"
            + (f": {', '.join(names[:10])}" if names else ""),
            got=repr(name),
            fix="see `veil datasets list`, or register it with `veil datasets add`",
        )

    def _reader(self, info: DatasetInfo, version: int | None = None) -> Reader:
        """The source's reader; for a managed dataset, its current (or given) sealed version."""
        if info.managed:
            return VersionReader(self, info, self._files(), version)
        if version is not None:
            raise InvalidInputError(
                f"'{info.name}' is a reference dataset: it has no versions",
                expected="version=None",
                got=f"version={version}",
                fix="leave version out",
            )
        return open_reader(info.source, info.format, **info.load_options)

    def _verify(self, info: DatasetInfo, reader: Reader) -> None:
        digest, size = reader.fingerprint()
        if digest != info.content_sha256:
            raise InvalidInputError(
                f"the data of '{info.name}' changed since it was registered",
                expected=f"SHA-256 {info.content_sha256[:16]}... ({info.size_bytes} bytes) at {info.source}",
                got=f"SHA-256 {digest[:16]}... ({size} bytes)",
                fix="restore the registered file, or register the new data under a new name",
            )

    def load_frame(
        self,
        name: str,
        columns: Sequence[str] | None = None,
        *,
        use: DataUse | str = DataUse.RAW,
        purpose: str = "",
        verify: bool = True,
        version: int | None = None,
    ) -> pd.DataFrame:
        """Load a registered table into memory (recorded on the trail first).

        A managed dataset is read from its current sealed version, whose
        SHA-256 is checked (``frame.attrs["veil.version"]`` says which); if an
        erasure shreds it meanwhile, the load reads the new current version
        instead, so a load sees one whole version.

        Args:
            name: Dataset name.
            columns: Only these columns (less memory).
            use: What the rows are for: :attr:`DataUse.RAW` (the caller gets
                them; owners only) or :attr:`DataUse.MECHANISM` (a DP mechanism
                or an audit reads them on the caller's behalf and returns none).
            purpose: Why (recorded on the trail).
            verify: Check the SHA-256 fingerprint against the registered one.
            version: A managed dataset's version other than the current one,
                if not yet shredded (needs ``dataset.erase``: an erasure checks
                its unlearning on the old rows).

        Raises:
            PermissionDeniedError: The acting principal may not load the rows
                for ``use`` (the refusal is recorded; nothing was read).
            DataTooLargeError: The estimated size exceeds the memory limit;
                nothing was read.
            InvalidInputError: The data changed since registration (for a
                managed dataset: the version's file or digest was tampered with).
            NotFoundError: ``version`` is shredded, or a managed dataset has no data left.
        """
        chosen = check_use(self.access, name, use, purpose)
        if version is not None:
            self.access.require(Permission.DATASET_ERASE, name, action="dataset.read")
        info = self._get(name)
        if columns is not None:
            check_columns_exist(columns, info.schema.column_names, role="requested")
        # None: not under consent management, or a maintenance read (it releases nothing)
        consent = None if chosen is DataUse.MAINTENANCE else consent_rule(self, info, purpose)
        reader = self._reader(info, version)
        estimate = reader.estimate_memory(info.n_rows, len(info.schema.columns), columns)
        check_fits_in_memory(estimate, self.settings.max_load_bytes, f"dataset '{name}'")
        snapshot = None if consent is None else consent.snapshot.to_dict()
        record_read(self.access, info, chosen, columns, purpose, consent=snapshot)
        if verify:
            self._verify(info, reader)
        if consent is None:
            return reader.read(columns)
        wanted = None if columns is None else [*columns, consent.unit]  # the filter needs it
        frame = reader.read(None if wanted is None else list(dict.fromkeys(wanted)))
        return consent.apply(frame, catalog_person_key(self), columns)

    def verified_source(
        self,
        name: str,
        columns: Sequence[str] | None = None,
        *,
        use: DataUse | str = DataUse.RAW,
        purpose: str = "",
    ) -> Path | None:
        """The registered Parquet file itself, for an engine that reads it where it lies (Spark).

        The same checks and trail record as :meth:`load_frame`, and the file's
        SHA-256 is verified, but no row is read here. ``None`` when the rows
        must go through :meth:`load_frame` instead: a managed dataset (its
        versions are sealed files), a format other than Parquet, or a dataset
        under consent management (the consent filter runs in the loader);
        nothing is recorded then.

        Raises:
            PermissionDeniedError: As :meth:`load_frame`.
            InvalidInputError: The file changed since registration.
        """
        info = self._get(name)
        if info.managed or info.format != "parquet":
            return None
        chosen = check_use(self.access, name, use, purpose)
        if columns is not None:
            check_columns_exist(columns, info.schema.column_names, role="requested")
        if chosen is not DataUse.MAINTENANCE and consent_rule(self, info, purpose) is not None:
            return None
        reader = self._reader(info)
        record_read(self.access, info, chosen, columns, purpose)
        self._verify(info, reader)
        return Path(info.source)

    def load_images(
        self,
        name: str,
        *,
        use: DataUse | str = DataUse.RAW,
        purpose: str = "",
        verify: bool = True,
    ) -> ImageArrays:
        """Load a registered image dataset (MNIST) as arrays; ``use`` as in :meth:`load_frame`."""
        chosen = check_use(self.access, name, use, purpose)
        info = self._get(name)
        reader = self._reader(info)
        if not isinstance(reader, MnistReader):
            raise InvalidInputError(
                f"'{name}' is a table, not an image dataset",
                expected="a dataset registered with --format mnist",
                got=f"format {info.format}",
                fix="use load_frame() for tables",
            )
        estimate = reader.estimate_memory(info.n_rows, 2, None)
        check_fits_in_memory(estimate, self.settings.max_load_bytes, f"dataset '{name}'")
        record_read(self.access, info, chosen, None, purpose)
        if verify:
            self._verify(info, reader)
        return reader.arrays()

    # ---------------------------------------------------------------- writing
    def add(
        self,
        source: str | Path,
        *,
        name: str,
        format: str | None = None,  # noqa: A002 - the user-facing word
        privacy_unit: str | None = None,
        quasi_identifiers: Iterable[str] = (),
        sensitive: Iterable[str] = (),
        bounds: Mapping[str, tuple[float, float]] | None = None,
        categories: Mapping[str, Sequence[str]] | None = None,
        max_groups: int = 1,
        max_rows: int = 1,
        delimiter: str | None = None,
        encoding: str = "utf-8",
        split: str | None = None,
        progress: ProgressCallback | None = None,
        managed: bool = False,
    ) -> DatasetInfo:
        """Validate ``source`` against its declared schema and register it as ``name``.

        Args:
            source: A file path, a MNIST directory, or ``sklearn:NAME``.
            name: Name to register under (letters, digits, ``.``, ``_``, ``-``).
            format: ``csv``, ``parquet``, ``adult``, ``mnist`` or ``sklearn``;
                guessed from ``source`` when omitted.
            privacy_unit: Column identifying a person; ``None`` means one row is
                one person.
            quasi_identifiers: Columns that together may identify a person.
            sensitive: Columns that must not be linked to a person.
            bounds: Declared ``(lower, upper)`` per numeric column.
            categories: Declared categories per categorical column.
            max_groups, max_rows: Declared contribution bounds per person (groups
                one person's rows fall into; rows per group). DP queries enforce them.
            delimiter: CSV delimiter (``,`` by default, tab for ``.tsv``).
            encoding: Text encoding of CSV / Adult files.
            split: ``train`` (default) or ``test`` for MNIST; ``all`` (default),
                ``train`` or ``test`` for a bundled scikit-learn set (a fixed
                two-thirds / one-third partition).
            progress: Receives progress events.
            managed: Copy the table into the workspace as sealed version 1
                (:mod:`veil.data._managed`; needs ``VEIL_VAULT_KEY`` or
                ``VEIL_VAULT_PASSPHRASE``), so that erasure and retention can
                rewrite it and crypto-shred old versions. Tables only: MNIST
                image sets stay reference datasets. The source file is not
                touched; deleting it afterwards is the owner's choice.

        The budget belongs to the data: bytes (the same SHA-256) registered
        under another name that is still active are refused, with or without a
        budget; bytes registered before and removed with ledger history rejoin
        that history (its budget and releases; ``report["rejoined"]`` says from
        which registration).

        The registration needs ``dataset.register`` and is recorded on the
        trail (``dataset.register``) in the transaction that writes it.

        Raises:
            PermissionDeniedError: The acting principal may not register data
                (only the refusal is recorded).
            InvalidInputError, SchemaError, NotFoundError, ConflictError: nothing
                is written in any of these cases (ConflictError also when the same
                bytes are registered, active, under another name).
        """
        self.access.require(Permission.DATASET_REGISTER, name, action="dataset.register")
        if not _NAME.fullmatch(name):
            raise InvalidInputError(
                "invalid dataset name",
                expected="1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
                got=repr(name),
                fix="choose a name such as adult-2026",
            )
        self._refuse_existing(name)
        options: dict[str, Any] = {"encoding": encoding, "split": split}
        if delimiter is not None:
            options["delimiter"] = delimiter
        reader = open_reader(str(source), format, **options)
        if managed:
            refuse_images(reader, name)
            self._files().vault()  # no master key: refuse before any work
        schema, n_rows, report = scan_source(
            reader,
            privacy_unit=privacy_unit,
            quasi_identifiers=tuple(quasi_identifiers),
            sensitive=tuple(sensitive),
            bounds=dict(bounds or {}),
            categories={k: tuple(v) for k, v in (categories or {}).items()},
            progress=progress,
            max_groups=max_groups,
            max_rows=max_rows,
        )
        digest, size = reader.fingerprint(progress)
        frame = None
        if managed:
            estimate = reader.estimate_memory(n_rows, len(schema.columns), None)
            check_fits_in_memory(estimate, self.settings.max_load_bytes, f"dataset '{name}'")
            frame = reader.read()
            report["managed"] = {"dtypes": frame_dtypes(frame)}
        from veil import __version__  # noqa: PLC0415 - avoids an import cycle

        fields = {
            "name": name,
            "format": reader.format,
            "source": reader.source,
            "content_sha256": digest,
            "size_bytes": size,
            "n_rows": n_rows,
            "n_columns": len(schema.columns),
            "privacy_schema": schema.to_dict(),
            "load_options": reader.load_options(),
            "created_by": self.access.principal.name,
            "veil_version": __version__,
        }
        written: list[WrittenVersion] = []
        try:
            with ExitStack() as stack, self.store.session(lock=True) as session:
                lock_digest(session, self.store.backend, digest)
                archived = same_data(session, digest)
                if archived is not None:
                    info = rejoin(session, archived, fields, report)
                    frame, info = self._without_erased(session, info, reader, frame, report)
                else:
                    row = DatasetRow(**fields, registration_report=report)
                    session.add(row)
                    session.flush()
                    info = DatasetInfo.from_row(row)
                if frame is not None:  # the sealed file first, then its row, one transaction
                    first = self._register_version(session, stack, info, frame, written)
                    info = replace(info, version=first.version)
                record_change(
                    self.access,
                    session,
                    "dataset.register",
                    info,
                    rejoined=report.get("rejoined"),
                    managed=info.managed,
                )
                return info
        except BaseException as exc:
            for done in written:
                self._undo_write(done, reason="the registration failed")
            if isinstance(exc, IntegrityError):  # registered by someone else meanwhile
                raise self._conflict(name) from exc
            raise

    def _without_erased(
        self,
        session: Session,
        info: DatasetInfo,
        reader: Reader,
        frame: pd.DataFrame | None,
        report: dict[str, Any],
    ) -> tuple[pd.DataFrame | None, DatasetInfo]:
        """A rejoined history must not bring back the people erased from it.

        The bytes registered again (a backup of the original file, say) may hold
        people erased since. A managed registration leaves their rows out of its
        first version (``report["erased_left_out"]`` counts them); a reference
        registration, whose file Veil cannot change, is refused.
        """
        unit = info.schema.privacy_unit
        erased = set(
            session.scalars(
                select(ErasureRow.person).where(
                    ErasureRow.dataset_id == info.dataset_id,
                    ErasureRow.kind == "erase",
                    ErasureRow.person.is_not(None),
                )
            )
        )
        if not erased or unit is None or info.dataset_id is None:
            return frame, info
        values = (frame if frame is not None else reader.read([unit]))[unit]
        tokens = np.asarray(person_tokens(catalog_person_key(self), info.dataset_id, values))
        back = np.isin(tokens, sorted(erased))
        if not back.any():
            return frame, info
        people = len(set(tokens[back].tolist()))
        if frame is None:
            raise ConflictError(
                f"this file holds {people} people erased from '{info.name}' before",
                expected="data without the people an erasure removed from this dataset's history",
                got=f"{int(back.sum())} rows of {people} erased people",
                fix="register it with --managed (their rows are then left out), or remove "
                "their rows from the file first",
            )
        report["erased_left_out"] = {"persons": people, "rows": int(back.sum())}
        kept = frame.loc[~back].reset_index(drop=True)
        row = session.get(DatasetRow, info.dataset_id)
        if row is not None:  # the row rejoin just wrote: its count follows the current version
            row.n_rows = len(kept)
            row.registration_report = dict(report)
            flag_modified(row, "registration_report")  # rejoin flushed this very dict before
        return kept, replace(info, n_rows=len(kept))

    def remove(self, name: str) -> dict[str, Any]:
        """Remove a registration; a reference dataset's file is never touched.

        A **managed** dataset's sealed versions are destroyed: every version's
        data key, then its file, after the removal commits (``dataset.shred``
        entries for an archived one; a crash in between is completed by
        :meth:`finish_shredding`). Its ledger history is archived as for any
        dataset.

        A dataset without ledger history (no budget, no release) is forgotten.
        One with history is **archived**: renamed out of the way (its name is
        free again), hidden from :meth:`list`, refused by :meth:`get`, its budget
        and releases kept; registering the same bytes again rejoins them.

        Needs ``dataset.register``; recorded on the trail (``dataset.remove``)
        in the transaction that removes it.

        Returns:
            ``{"name", "archived", "releases", "archived_as"}``, and
            ``"destroyed_versions"`` for a managed dataset.

        Raises:
            PermissionDeniedError: The acting principal may not remove data.
            NotFoundError: No such dataset.
        """
        self.access.require(Permission.DATASET_REGISTER, name, action="dataset.remove")
        info = self._get(name)
        with self.store.session(lock=True) as session:
            row = session.scalars(
                select(DatasetRow).where(DatasetRow.name == name).with_for_update()
            ).one_or_none()
            if row is None or row.content_sha256 != info.content_sha256:
                raise self._changed(name)
            releases, has_history = ledger_history(session, row.id)
            has_history = has_history or governance_history(session, row.id)
            result: dict[str, Any] = {
                "name": name,
                "archived": has_history,
                "releases": releases,
                "archived_as": None,
            }
            live = (
                self._supersede_for_removal(session, row.id, delete=not has_history)
                if info.managed
                else []
            )
            if not has_history:
                session.delete(row)
            else:
                by = self.access.principal.name
                result["archived_as"] = archive(row, info, by=by, releases=releases)
            record_change(
                self.access,
                session,
                "dataset.remove",
                info,
                archived=has_history,
                releases=releases,
                archived_as=result["archived_as"],
                **({"destroyed_versions": [v.version for v in live]} if info.managed else {}),
            )
        if live:
            crash_point("removal-committed")
            self._destroy_removed(info, live, deleted=not has_history)
        if info.managed:
            result["destroyed_versions"] = [v.version for v in live]
        return result

    def update(
        self,
        name: str,
        *,
        privacy_unit: str | None = None,
        quasi_identifiers: Iterable[str] | None = None,
        sensitive: Iterable[str] | None = None,
        bounds: Mapping[str, tuple[float, float]] | None = None,
        categories: Mapping[str, Sequence[str]] | None = None,
        max_groups: int | None = None,
        max_rows: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> DatasetInfo:
        """Re-declare a registration's bounds, categories and roles, checking every row again.

        Arguments left ``None`` keep what is declared; ``bounds`` and
        ``categories`` add to (or replace, column by column) the declarations
        made at registration, and a column switches between the two;
        ``privacy_unit=""`` declares that one row is one person. The data must
        be the registered bytes (its fingerprint is checked first), and the
        change is recorded in ``report["updates"]``. The dataset keeps its name,
        budget and releases.

        Needs ``dataset.register``; recorded on the trail (``dataset.update``)
        in the transaction that writes the change.

        Raises:
            PermissionDeniedError: The acting principal may not change the
                registration (only the refusal is recorded).
            NotFoundError, InvalidInputError, SchemaError: nothing is written.
        """
        self.access.require(Permission.DATASET_REGISTER, name, action="dataset.update")
        info = self._get(name)
        schema = info.schema
        declared = {c.name: c for c in schema.columns if c.declared_by == "user"}
        new_bounds = {c: s.bounds for c, s in declared.items() if s.bounds is not None}
        new_categories = {c: s.categories for c, s in declared.items() if s.categories is not None}
        for column, pair in (bounds or {}).items():
            new_bounds[column] = (float(pair[0]), float(pair[1]))
            new_categories.pop(column, None)
        for column, values in (categories or {}).items():
            new_categories[column] = tuple(values)
            new_bounds.pop(column, None)
        unit = schema.privacy_unit if privacy_unit is None else (privacy_unit or None)
        reader = self._reader(info)
        self._verify(info, reader)
        new_schema, n_rows, report = scan_source(
            reader,
            privacy_unit=unit,
            quasi_identifiers=tuple(
                schema.quasi_identifiers if quasi_identifiers is None else quasi_identifiers
            ),
            sensitive=tuple(schema.sensitive if sensitive is None else sensitive),
            bounds=new_bounds,
            categories={c: tuple(v) for c, v in new_categories.items()},
            progress=progress,
            max_groups=schema.max_groups if max_groups is None else max_groups,
            max_rows=schema.max_rows if max_rows is None else max_rows,
        )
        changed: dict[str, Any] = {
            "privacy_unit": privacy_unit,
            "quasi_identifiers": None
            if quasi_identifiers is None
            else list(new_schema.quasi_identifiers),
            "sensitive": None if sensitive is None else list(new_schema.sensitive),
            "bounds": {c: list(b) for c, b in (bounds or {}).items()} or None,
            "categories": {c: list(v) for c, v in (categories or {}).items()} or None,
            "max_groups": max_groups,
            "max_rows": max_rows,
        }
        kept = {k: v for k, v in info.report.items() if k not in report}
        report = {
            **kept,
            **report,
            "updates": [
                *info.report.get("updates", []),
                {
                    "at": datetime.now(UTC).isoformat(),
                    "by": self.access.principal.name,
                    "changed": {k: v for k, v in changed.items() if v is not None},
                    "schema_before": schema.to_dict(),
                },
            ],
        }
        with self.store.session(lock=True) as session:
            row = session.scalars(
                select(DatasetRow).where(DatasetRow.name == name).with_for_update()
            ).one_or_none()
            if row is None or row.content_sha256 != info.content_sha256 or row.n_rows != n_rows:
                raise self._changed(name)
            row.privacy_schema = new_schema.to_dict()
            row.n_columns = len(new_schema.columns)
            row.registration_report = report
            session.flush()
            updated = DatasetInfo.from_row(row, version=info.version)
            recorded = report["updates"][-1]["changed"]
            record_change(self.access, session, "dataset.update", updated, changed=recorded)
            return updated

    @staticmethod
    def _changed(name: str) -> ConflictError:
        return ConflictError(
            f"'{name}' changed while it was being updated",
            expected="one update at a time",
            got="another update, removal or registration meanwhile",
            fix=f"see `veil datasets show {name}` and run the update again",
        )

    def _refuse_existing(self, name: str) -> None:
        with self.store.session() as session:
            exists = session.scalars(select(DatasetRow.id).where(DatasetRow.name == name)).first()
        if exists is not None:
            raise self._conflict(name)

    @staticmethod
    def _conflict(name: str) -> ConflictError:
        return ConflictError(
            f"a dataset named '{name}' is already registered",
            expected="a new name",
            got=repr(name),
            fix=f"choose another --name, or inspect it with `veil datasets show {name}`",
        )
