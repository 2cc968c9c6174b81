"""``veil models``: trained models and their privacy cards.

Reading a card needs ``model.read`` on the model's training set (or on the
workspace): ``show`` refuses without it (exit code 9, recorded on the trail),
``list`` leaves out the models the acting principal may not read.

Both say how many people erased from the model's dataset it still carries
(:func:`veil.governance.carried_erasures`: its membership list against the
erasure records) and what to do about them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from veil.cli._output import out, print_json
from veil.workspace import Workspace

if TYPE_CHECKING:
    from veil.access import Access
    from veil.data import Catalog
    from veil.governance import CarriedReport
    from veil.train import ModelRegistry, PrivacyCard

__all__ = ["app", "render_card"]

app = typer.Typer(help="Trained models and their privacy cards.", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def render_card(card: PrivacyCard) -> None:
    """Print a privacy card as a two-column table (shared with ``veil train`` and the demo)."""
    table = Table("privacy card", card.model, show_header=True)
    for label, value in card.lines():
        table.add_row(label, value)
    out.print(table)


@contextmanager
def _opened() -> Iterator[tuple[ModelRegistry, Access, Catalog]]:
    """The workspace's model registry, who acts on it and its catalogue (store closed after).

    Listing and showing read the privacy cards (JSON): PyTorch is not needed, nor loaded.
    """
    from veil.access import Access  # noqa: PLC0415
    from veil.data import Catalog  # noqa: PLC0415
    from veil.store import Store  # noqa: PLC0415
    from veil.train import ModelRegistry  # noqa: PLC0415

    workspace = Workspace.locate()
    store = Store.for_workspace(workspace)
    try:
        access = Access.open(workspace, store=store)
        catalog = Catalog(store, workspace.settings, access=access)
        yield ModelRegistry.for_workspace(workspace), access, catalog
    finally:
        store.dispose()


def _carried(catalog: Catalog, registry: ModelRegistry, name: str) -> CarriedReport | None:
    """What ``name`` carries of erased people; ``None`` when its dataset is gone (no lineage)."""
    from veil.errors import NotFoundError  # noqa: PLC0415
    from veil.governance import carried_erasures  # noqa: PLC0415

    try:
        return carried_erasures(catalog, registry, name)
    except NotFoundError:
        return None


@app.command("list")
def list_(as_json: JsonOption = False) -> None:
    """The workspace's trained models you may read, with their epsilon."""
    from veil.access import Permission  # noqa: PLC0415

    with _opened() as (registry, access, catalog):
        every = registry.list()
        cards = [c for c in every if access.allows(Permission.MODEL_READ, c.dataset or None)]
        carried = {c.model: _carried(catalog, registry, c.model) for c in cards}
    if as_json:
        print_json([c.to_dict() | _lineage_fields(carried[c.model]) for c in cards])
        return
    if not cards:
        out.print(
            "No models yet: train one with `veil train --dataset NAME --model logreg --name MODEL`."
            if not every
            else f"No model you may read ({len(every)} in this workspace): ask its dataset's "
            "owner for a role that reads models (analyst or auditor).",
            markup=False,
        )
        return
    table = Table(
        "model",
        "dataset",
        "architecture",
        "epsilon",
        "delta",
        "test accuracy",
        "erased people",
        "created",
    )
    for c in cards:
        report = carried[c.model]
        table.add_row(
            c.model,
            c.dataset,
            c.architecture,
            f"{c.epsilon:.4g}" if c.private else "not private",
            f"{c.delta:g}",
            "-" if c.test_accuracy is None else f"{c.test_accuracy:.2%}",
            _erased_cell(report),
            c.created_at,
        )
    out.print(table)


def _erased_cell(report: CarriedReport | None) -> str:
    if report is None:
        return "-"
    return f"{'' if report.members_known else '<= '}{report.erased_people}"


def _lineage_fields(report: CarriedReport | None) -> dict[str, object]:
    """The --json fields: ``erased_people`` and ``lineage`` (the whole carried report)."""
    if report is None:
        return {"erased_people": None, "lineage": None}
    return {"erased_people": report.erased_people, "lineage": report.to_dict()}


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Model name.")], as_json: JsonOption = False
) -> None:
    """Print a model's privacy card."""
    from veil.access import Permission  # noqa: PLC0415

    with _opened() as (registry, access, catalog):
        card = registry.card(name)
        access.require(Permission.MODEL_READ, card.dataset or None, action="model.read")
        carried = _carried(catalog, registry, name)
    if as_json:
        print_json(card.to_dict() | _lineage_fields(carried))
        return
    render_card(card)
    if carried is not None:
        style = (
            "bold yellow"
            if carried.erased_people or carried.rows_removed_by_retention_since
            else ""
        )
        out.print(carried.summary(), style=style, markup=False)
