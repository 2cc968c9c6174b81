"""``veil models``: trained models and their privacy cards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from veil.cli._output import out, print_json
from veil.errors import require
from veil.workspace import Workspace

if TYPE_CHECKING:
    from veil.train import PrivacyCard

__all__ = ["app", "render_card"]

app = typer.Typer(help="Trained models and their privacy cards.", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def render_card(card: PrivacyCard) -> None:
    """Print a privacy card as a two-column table (shared with ``veil train`` and the demo)."""
    table = Table("privacy card", card.model, show_header=True)
    for label, value in card.lines():
        table.add_row(label, value)
    out.print(table)


def _registry() -> object:
    require("torch", extra="train", purpose="reading trained models")
    from veil.train import ModelRegistry  # noqa: PLC0415

    return ModelRegistry.for_workspace(Workspace.locate())


@app.command("list")
def list_(as_json: JsonOption = False) -> None:
    """Every trained model of the workspace, with its epsilon."""
    from veil.train import ModelRegistry  # noqa: PLC0415

    registry = _registry()
    assert isinstance(registry, ModelRegistry)  # noqa: S101 - built above
    cards = registry.list()
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
    from veil.train import ModelRegistry  # noqa: PLC0415

    registry = _registry()
    assert isinstance(registry, ModelRegistry)  # noqa: S101 - built above
    card = registry.card(name)
    if as_json:
        print_json(card.to_dict())
        return
    render_card(card)
