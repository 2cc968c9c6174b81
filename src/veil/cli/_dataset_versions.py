"""``veil datasets versions``: a managed dataset's sealed versions (registered on ``veil datasets``).

Apart from :mod:`veil.cli.datasets` only to keep that module's size readable;
the work is :meth:`veil.data.Catalog.versions` and
:meth:`veil.data.Catalog.finish_shredding`.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from veil.cli._output import out, print_json

__all__ = ["versions"]


def versions(
    name: Annotated[str, typer.Argument(help="A managed dataset.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """List a managed dataset's versions: current, superseded, or shredded (key destroyed).

    Any shredding cut short by a crash is completed first (when you may erase:
    dataset.erase), so a superseded version never stays readable.
    """
    from veil.access import Permission  # noqa: PLC0415 - loads SQLAlchemy
    from veil.data import Catalog  # noqa: PLC0415 - loads pandas and SQLAlchemy

    catalog = Catalog.open()
    try:
        info = catalog.get(name)
        finished = []
        if info.managed and catalog.access.allows(Permission.DATASET_ERASE, name):
            finished = catalog.finish_shredding(name)
        found = catalog.versions(name)
    finally:
        catalog.store.dispose()
    if as_json:
        print_json(
            {
                "name": name,
                "managed": info.managed,
                "shredded_now": [v.version for v in finished],
                "versions": [v.to_dict() for v in found],
            }
        )
        return
    if not info.managed:
        out.print(
            f"'{name}' is a reference dataset: Veil reads {info.source} and keeps no versions. "
            f"Register it with --managed for erasure and retention."
        )
        return
    if finished:
        out.print(
            "Finished shredding version(s) "
            + ", ".join(str(v.version) for v in finished)
            + " (left superseded by an interrupted run)."
        )
    table = Table("version", "state", "rows", "bytes", "reason", "created", "by", "shredded")
    for v in found:
        table.add_row(
            str(v.version),
            v.state,
            f"{v.n_rows:,}",
            f"{v.size_bytes:,}",
            v.reason,
            v.created_at.isoformat()[:19],
            v.created_by,
            "" if v.shredded_at is None else v.shredded_at.isoformat()[:19],
        )
    out.print(table)
