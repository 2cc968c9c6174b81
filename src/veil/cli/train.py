"""``veil train``: a differentially private model on a registered dataset.

``--shards S --slices R`` trains a SISA ensemble instead (both default to 1:
one model), so that erasing a person later retrains one shard from a
checkpoint (``veil unlearn``) instead of the whole model.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from veil.cli._output import err, out, print_json, progress_bar
from veil.cli.budget import render_status
from veil.cli.models import render_card
from veil.errors import InvalidInputError, require
from veil.workspace import Workspace

# torch and Opacus load inside the command: `veil --help` stays fast.

__all__ = ["train"]


def _check_privacy_choice(epsilon: float | None, *, non_private: bool) -> None:
    """Exactly one of --epsilon (DP-SGD) and --non-private (a labelled baseline)."""
    if non_private and epsilon is not None:
        raise InvalidInputError(
            "--non-private trains without privacy, so it takes no --epsilon",
            expected="--epsilon E (DP-SGD) or --non-private (a baseline), not both",
            got=f"--epsilon {epsilon:g} --non-private",
            fix="drop --epsilon for the baseline, or drop --non-private for a private model",
        )
    if not non_private and epsilon is None:
        raise InvalidInputError(
            "a private model needs a target epsilon",
            expected="--epsilon E (at most 100), or --non-private for a baseline without privacy",
            got="neither",
            fix="for example --epsilon 3 --delta 1e-5",
        )
    if epsilon is not None:
        from veil.ledger.params import check_release_epsilon  # noqa: PLC0415 - keeps --help fast

        # Before torch loads or any data is read (a huge target once grew to 24 GB calibrating).
        check_release_epsilon(epsilon)


def _check_sisa(shards: int, slices: int) -> None:
    """--shards and --slices are whole numbers >= 1 (checked before torch loads)."""
    for option, value in (("--shards", shards), ("--slices", slices)):
        if value < 1:
            raise InvalidInputError(
                f"{option} must be at least 1",
                expected=f"{option} N with N >= 1 (1: no SISA)",
                got=str(value),
                fix="for example --shards 20 --slices 5",
            )


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def train(
    dataset: Annotated[str, typer.Option("--dataset", help="Registered dataset to train on.")],
    epsilon: Annotated[
        float | None,
        typer.Option("--epsilon", help="Target epsilon of the whole run (at most 100)."),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", help="logreg, mlp, cnn (28x28 images) or scatternet (images).")
    ] = "mlp",
    delta: Annotated[
        float, typer.Option("--delta", help="Target delta (keep it below 1/n).")
    ] = 1e-5,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the data.")] = 5,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Expected (Poisson) batch size.")
    ] = 256,
    max_grad_norm: Annotated[
        float, typer.Option("--max-grad-norm", help="Per-example clipping bound C.")
    ] = 1.0,
    learning_rate: Annotated[float, typer.Option("--lr", help="Learning rate.")] = 0.5,
    optimizer: Annotated[str, typer.Option("--optimizer", help="sgd or adam.")] = "sgd",
    momentum: Annotated[float, typer.Option("--momentum", help="SGD momentum.")] = 0.0,
    schedule: Annotated[
        str, typer.Option("--schedule", help="Learning rate: constant or cosine (decays to 0).")
    ] = "constant",
    hidden: Annotated[int, typer.Option("--hidden", help="Hidden units of the mlp.")] = 128,
    max_physical_batch: Annotated[
        int,
        typer.Option(
            "--max-physical-batch", help="Most examples in memory at once (virtual steps)."
        ),
    ] = 1024,
    label: Annotated[
        str | None, typer.Option("--label", help="Label column (default: the format's).")
    ] = None,
    features: Annotated[
        str | None,
        typer.Option("--features", help="Comma-separated feature columns (default: all declared)."),
    ] = None,
    test: Annotated[
        str | None,
        typer.Option("--test", help="Registered held-out dataset to report accuracy on."),
    ] = None,
    test_epsilon: Annotated[
        float,
        typer.Option("--test-epsilon", help="Epsilon of the DP test accuracy (charged to --test)."),
    ] = 0.1,
    name: Annotated[
        str | None, typer.Option("--name", help="Model name (default: DATASET-MODEL-epsE).")
    ] = None,
    purpose: Annotated[
        str, typer.Option("--purpose", help="Why (recorded in the ledger).")
    ] = "model-training",
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Reproducible noise and sampling: NOT private (tests, demos)."),
    ] = None,
    non_private: Annotated[
        bool,
        typer.Option(
            "--non-private",
            help="Train WITHOUT privacy, as a baseline to compare with: no clipping, no noise, "
            "no budget spent; recorded in the ledger's history; the card says NOT PRIVATE.",
        ),
    ] = False,
    shards: Annotated[
        int,
        typer.Option(
            "--shards",
            help="SISA: train S models on disjoint persons and average them (1: one model).",
        ),
    ] = 1,
    slices: Annotated[
        int,
        typer.Option(
            "--slices",
            help="SISA: checkpoints within each shard, so unlearning restarts part-way (1: none).",
        ),
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train with DP-SGD; the budget is charged (the model and its --test accuracy together) first."""
    _check_privacy_choice(epsilon, non_private=non_private)
    _check_sisa(shards, slices)
    require("torch", extra="train", purpose="veil train")
    from veil.access import Access  # noqa: PLC0415
    from veil.ledger import Ledger  # noqa: PLC0415
    from veil.store import Store  # noqa: PLC0415
    from veil.train import DPConfig, ModelRegistry, fit_private, fit_sisa  # noqa: PLC0415
    from veil.vault import KeyStore  # noqa: PLC0415

    config = DPConfig(
        epochs=epochs,
        batch_size=batch_size,
        max_grad_norm=max_grad_norm,
        epsilon=None if non_private else epsilon,
        delta=delta,
        learning_rate=learning_rate,
        optimizer=optimizer,
        momentum=momentum,
        schedule=schedule,
        max_physical_batch_size=max_physical_batch,
        sampling="shuffle" if non_private else "poisson",
        private=not non_private,
        seed=seed,
    )
    if non_private:
        err.print(
            "[bold red]WARNING: NOT PRIVATE.[/] --non-private trains without clipping or noise: "
            "the model can reveal its training records. It is a baseline for comparison only; "
            "do not release or serve it. The run is recorded in the ledger's history "
            "(no budget is spent) and its card says NOT PRIVATE. Only the data's owner may ask "
            "for it (dataset.non_private)."
        )
    workspace = Workspace.locate()
    from veil.data import Catalog  # noqa: PLC0415 - SQLAlchemy, pandas: keeps `veil --help` fast

    store = Store.for_workspace(workspace)
    # One acting principal for the catalogue and the ledger: one set of checks, one trail.
    access = Access.open(workspace, store=store)
    catalog = Catalog(store, workspace.settings, access=access)
    # The workspace ledger is the budget gate; its key seals its checkpoints (as `veil budget`'s).
    ledger = Ledger(
        store,
        workspace.settings,
        key=KeyStore.for_workspace(workspace).get("ledger"),
        access=access,
    )
    registry = ModelRegistry.for_workspace(workspace)
    model_name = name or (
        (f"{dataset}-{model}-nonprivate" if non_private else f"{dataset}-{model}-eps{epsilon:g}")
        + (f"-sisa{shards}x{slices}" if (shards, slices) != (1, 1) else "")
    )
    try:
        common: dict[str, Any] = {
            "name": model_name,
            "model": model,
            "hidden": (hidden,),
            "label": label,
            "features": _split(features),
            "test": test,
            "test_epsilon": test_epsilon,
            "purpose": purpose,
        }
        with progress_bar() as progress:
            if shards == 1 and slices == 1:
                trained = fit_private(
                    catalog, ledger, registry, dataset, config, progress=progress, **common
                )
            else:
                trained = fit_sisa(
                    catalog,
                    ledger,
                    registry,
                    dataset,
                    config,
                    shards=shards,
                    slices=slices,
                    progress=progress,
                    **common,
                )
        status = ledger.status(dataset)
    finally:
        catalog.store.dispose()
    if as_json:
        payload = trained.to_dict()
        payload["budget"] = status.to_dict()
        print_json(payload)
        return
    for note in trained.notes:
        err.print(f"· {note}", markup=False)
    render_card(trained.card)
    if trained.card.test_no_utility:
        err.print(
            "[bold yellow]warning:[/] no utility: the DP test accuracy "
            f"({trained.card.test_accuracy:.1%}) is not distinguishable from always guessing the "
            f"most common label ({trained.card.test_majority_rate:.1%}). Train with a larger "
            "epsilon, more rows, or a simpler model before using it."
        )
    elif trained.card.test_accuracy is None:
        err.print("· no --test set: the model's accuracy was not measured", markup=False)
    render_status(status)
    out.print(f"saved: {registry.root / trained.name}")
