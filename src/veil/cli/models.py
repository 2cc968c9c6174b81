"""``veil models``: trained models and their privacy cards.

Reading a card needs ``model.read`` on the model's training set (or on the
workspace): ``show`` refuses without it (exit code 9, recorded on the trail),
``list`` leaves out the models the acting principal may not read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from veil.cli._output import out, print_json
from veil.errors import require
from veil.workspace import Workspace

if TYPE_CHECKING:
    from veil.access import Access
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
def _opened() -> Iterator[tuple[ModelRegistry, Access]]:
    """The workspace's model registry and who acts on it (the store closed afterwards)."""
    require("torch", extra="train", purpose="reading trained models")
    from veil.access import Access  # noqa: PLC0415
    from veil.store import Store  # noqa: PLC0415
    from veil.train import ModelRegistry  # noqa: PLC0415

    workspace = Workspace.locate()
    store = Store.for_workspace(workspace)
    try:
        yield ModelRegistry.for_workspace(workspace), Access.open(workspace, store=store)
    finally:
        store.dispose()


@app.command("list")
def list_(as_json: JsonOption = False) -> None:
    """The workspace's trained models you may read, with their epsilon."""
    from veil.access import Permission  # noqa: PLC0415

    with _opened() as (registry, access):
        cards = [
            c for c in registry.list() if access.allows(Permission.MODEL_READ, c.dataset or None)
        ]
    if as_json:
        print_json([c.to_dict() for c in cards])
        return
    table = Table(
        "model", "dataset", "architecture", "epsilon", "delta", "test accuracy", "created"
    )
    for c in cards:
        table.add_row(
            c.model,
            c.dataset,
            c.architecture,
            f"{c.epsilon:.4g}" if c.private else "not private",
            f"{c.delta:g}",
            "-" if c.test_accuracy is None else f"{c.test_accuracy:.2%}",
            c.created_at,
        )
    out.print(table)


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Model name.")], as_json: JsonOption = False
) -> None:
    """Print a model's privacy card."""
    from veil.access import Permission  # noqa: PLC0415

    with _opened() as (registry, access):
        card = registry.card(name)
        access.require(Permission.MODEL_READ, card.dataset or None, action="model.read")
    if as_json:
        print_json(card.to_dict())
        return
    render_card(card)
