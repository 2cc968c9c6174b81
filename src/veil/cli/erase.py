"""``veil erase``: remove one person from a managed dataset and destroy the old version's key.

Needs ``dataset.erase`` (owners). The person's identifier is turned into a
keyed token at once: the erasure record, the trail and the output name the
token, never the identifier. A refusal or failure exits non-zero with nothing
changed, and is recorded on the trail (by error code, never the identifier).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from veil.cli._acting import failure_recorded
from veil.cli._output import out, print_json, progress_bar
from veil.workspace import Workspace

if TYPE_CHECKING:
    from veil.access import Access
    from veil.governance import ErasureReport
    from veil.ledger import Ledger
    from veil.store import Store
    from veil.train import ModelRegistry

__all__ = ["erase", "render_erasure"]


def render_erasure(report: ErasureReport) -> None:
    """Print an erasure report for people (shared with the demo)."""
    out.print(
        f"erased person {report.person} from '{report.dataset}': version {report.from_version} "
        f"-> {report.to_version}, {report.rows_removed:,} rows removed, {report.rows_left:,} left; "
        f"the key of version {report.from_version} is destroyed."
    )
    if report.affected:
        table = Table("derived", "name", "kind", "erased people it carries", "what to do")
        for item in report.affected:
            carried = "unknown" if item.erased_people is None else str(item.erased_people)
            table.add_row(item.kind, item.name, item.model_kind or "-", carried, item.action)
        out.print(table)
    else:
        out.print("no model or output derived from this dataset carries the person.")
    for result in report.unlearning:
        if result.get("ok"):
            verdict = result.get("verdict")
            out.print(f"unlearned: {result['model']}" + (f" ({verdict})" if verdict else ""))
        else:
            out.print(
                f"NOT unlearned: {result['model']} ({result.get('error')}): run "
                f"veil unlearn {result['model']}"
            )
    out.print(f"note: {report.budget_note}.")


def erase(
    dataset: Annotated[str, typer.Argument(help="A managed dataset.")],
    person: Annotated[
        str, typer.Option("--person", help="The person's privacy-unit value, as in the data.")
    ],
    reason: Annotated[
        str, typer.Option("--reason", help="Why (kept in the erasure record and on the trail).")
    ],
    no_unlearn: Annotated[
        bool,
        typer.Option(
            "--no-unlearn",
            help="Do not retrain the SISA models that carry the person (they are only marked).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Write a new version without PERSON, unlearn SISA models that carry them, shred the old key."""
    from veil.access import Access, Permission  # noqa: PLC0415 - keeps `veil --help` fast
    from veil.data import Catalog  # noqa: PLC0415
    from veil.governance import erase as run  # noqa: PLC0415
    from veil.store import Store  # noqa: PLC0415

    workspace = Workspace.locate()
    store = Store.for_workspace(workspace)
    try:
        access = Access.open(workspace, store=store)
        catalog = Catalog(store, workspace.settings, access=access)
        # Refused before anything else, and recorded once as refused (not also as failed).
        access.require(Permission.DATASET_ERASE, dataset, action="dataset.erase", purpose=reason)
        registry, ledger = _models_and_ledger(workspace, store, access)
        with (
            failure_recorded(access, "dataset.erase", dataset=dataset, purpose=reason),
            progress_bar() as progress,
        ):
            report = run(
                catalog,
                dataset,
                person,
                reason=reason,
                unlearn=not no_unlearn,
                registry=registry,
                ledger=ledger,
                progress=progress,
            )
    finally:
        store.dispose()
    if as_json:
        print_json(report.to_dict())
        return
    render_erasure(report)


def _models_and_ledger(
    workspace: Workspace, store: Store, access: Access
) -> tuple[ModelRegistry | None, Ledger]:
    """The model registry and the ledger, when the train extra is installed (else no models)."""
    from veil.ledger import Ledger  # noqa: PLC0415
    from veil.vault import KeyStore  # noqa: PLC0415

    ledger = Ledger(
        store,
        workspace.settings,
        key=KeyStore.for_workspace(workspace).get("ledger"),
        access=access,
    )
    models = workspace.home / "models"
    if (
        importlib.util.find_spec("torch") is None
        or not models.is_dir()
        or not any(models.iterdir())
    ):
        return None, ledger  # no model in this workspace: no need to load torch (seconds)
    from veil.train import ModelRegistry  # noqa: PLC0415

    return ModelRegistry.for_workspace(workspace), ledger
