"""``veil unlearn MODEL``: retrain a SISA model without every erased person it still carries.

The people are those of the model's dataset with an erasure record whose
tokens are in the model's membership list (``veil models show`` counts them).
Only the shards and slices that held them are retrained. The membership test
of the erased people runs when their rows are still readable (a superseded
version whose key is not destroyed yet); otherwise the output says that it did
not run, and why. The outcome is added to the model's audit report
(``audit-report.html`` in its folder) and recorded on the trail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from veil.cli._acting import failure_recorded
from veil.cli._output import out, print_json, progress_bar
from veil.errors import require
from veil.workspace import Workspace

if TYPE_CHECKING:
    from veil.governance import UnlearningReport

__all__ = ["render_unlearning", "unlearn"]


def render_unlearning(report: UnlearningReport) -> None:
    """Print an unlearning report for people."""
    if not report.erased_people:
        out.print(f"'{report.model}': {report.not_verified}.")
        return
    people = "person" if report.erased_people == 1 else "people"
    done = report.unlearning
    out.print(
        f"unlearned {report.erased_people} erased {people} from '{report.model}': "
        f"{done.get('shards_retrained', '?')} shard(s) retrained in {report.seconds:.1f} s."
    )
    check = report.verification
    if check is None:
        out.print(f"verification NOT run: {report.not_verified}.")
    else:
        for label, side in (("before", check.before), ("after", check.after)):
            auc = "n/a (one person)" if side.auc is None else f"{side.auc:.3f}"
            out.print(
                f"  {label:6} unlearning: AUC {auc}, mean percentile among non-members "
                f"{side.percentile:.1f}: {side.verdict}"
            )
        out.print(
            f"verdict: {check.verdict} ({check.attack}, {check.references} reference models, "
            f"{check.non_members} non-members)"
        )
    if report.report:
        out.print(f"audit report: {report.report}")


def unlearn(
    model: Annotated[str, typer.Argument(help="A SISA model (trained with --shards).")],
    references: Annotated[
        int, typer.Option("--references", help="Reference models of the membership test.")
    ] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Retrain MODEL without the erased people it carries, and test that it forgot them."""
    require("torch", extra="train", purpose="veil unlearn")
    from veil.access import Access  # noqa: PLC0415 - SQLAlchemy, pandas: keeps `veil --help` fast
    from veil.data import Catalog  # noqa: PLC0415
    from veil.governance import unlearn_and_verify  # noqa: PLC0415
    from veil.ledger import Ledger  # noqa: PLC0415
    from veil.store import Store  # noqa: PLC0415
    from veil.train import ModelRegistry  # noqa: PLC0415
    from veil.vault import KeyStore  # noqa: PLC0415

    workspace = Workspace.locate()
    store = Store.for_workspace(workspace)
    try:
        access = Access.open(workspace, store=store)
        catalog = Catalog(store, workspace.settings, access=access)
        ledger = Ledger(
            store,
            workspace.settings,
            key=KeyStore.for_workspace(workspace).get("ledger"),
            access=access,
        )
        registry = ModelRegistry.for_workspace(workspace)
        purpose = f"model-training: unlearning of model '{model}'"
        with (
            failure_recorded(access, "model.unlearn", purpose=purpose),
            progress_bar() as progress,
        ):
            report = unlearn_and_verify(
                catalog,
                ledger,
                registry,
                model,
                purpose=purpose,
                references=references,
                progress=progress,
            )
    finally:
        store.dispose()
    if as_json:
        print_json(report.to_dict())
        return
    render_unlearning(report)
