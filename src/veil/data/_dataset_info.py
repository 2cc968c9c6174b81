"""The record of a registered dataset, as the catalogue stores and shows it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from veil.data._schema import PrivacySchema
from veil.store.tables import DatasetRow

__all__ = ["DatasetInfo"]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset, as recorded in the workspace.

    ``managed``: Veil keeps the data as sealed versions in the workspace
    (``veil datasets add --managed``); ``version`` is the current one (``None``
    for a reference dataset, or a managed one whose versions were all destroyed).
    ``n_rows`` is the current version's row count; ``content_sha256`` stays the
    registered bytes' digest across versions.
    """

    name: str
    format: str
    source: str
    content_sha256: str
    size_bytes: int
    n_rows: int
    schema: PrivacySchema
    load_options: dict[str, Any]
    report: dict[str, Any]
    created_at: datetime
    created_by: str
    veil_version: str
    archived: dict[str, Any] | None = None
    dataset_id: int | None = None  # the row's id: what trail entries link to
    managed: bool = False
    version: int | None = None

    @classmethod
    def from_row(cls, row: DatasetRow, *, version: int | None = None) -> DatasetInfo:
        """The record of ``row``; ``version``: its current version (the caller looks it up)."""
        return cls(
            name=row.name,
            format=row.format,
            source=row.source,
            content_sha256=row.content_sha256,
            size_bytes=row.size_bytes,
            n_rows=row.n_rows,
            schema=PrivacySchema.from_dict(row.privacy_schema),
            load_options=dict(row.load_options),
            report=dict(row.registration_report),
            created_at=row.created_at,
            created_by=row.created_by,
            veil_version=row.veil_version,
            archived=row.registration_report.get("archived"),
            dataset_id=row.id,
            managed="managed" in row.registration_report,
            version=version,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (what ``veil datasets show --json`` prints)."""
        return {
            "name": self.name,
            "format": self.format,
            "source": self.source,
            "content_sha256": self.content_sha256,
            "size_bytes": self.size_bytes,
            "n_rows": self.n_rows,
            "n_columns": len(self.schema.columns),
            "schema": self.schema.to_dict(),
            "load_options": self.load_options,
            "registration_report": self.report,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "veil_version": self.veil_version,
            "archived": self.archived,
            "managed": self.managed,
            "version": self.version,
        }
