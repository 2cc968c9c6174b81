"""``veil trail``: read, verify, prove and checkpoint the tamper-evident trail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from veil.cli._output import err, out, print_json, progress_bar, write_json_atomic
from veil.cli._when import parse_since
from veil.cli.access import open_access
from veil.errors import InvalidInputError, NotFoundError, StoreError

if TYPE_CHECKING:
    from veil.access import TrailEntry, TrailReport, TreeHead

# veil.access (SQLAlchemy, cryptography) is imported inside each command: `veil --help` stays fast.

__all__ = ["DEFAULT_LIMIT", "app"]

DEFAULT_LIMIT = 50
_DETAIL_WIDTH = 100

app = typer.Typer(
    help="Read, verify, prove and checkpoint the trail: every access leaves a trace.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
_OUTCOME_STYLE = {"allowed": "green", "refused": "bold red", "failed": "yellow"}


def _short(value: object) -> object:
    """Long hex digests (content, chain) cut to 12 digits: the table is for reading."""
    text = str(value)
    if len(text) >= 40 and all(c in "0123456789abcdef" for c in text):  # noqa: PLR2004
        return text[:12] + "…"
    return value


def _details(entry: TrailEntry) -> str:
    # What happened first (the details), then what it links to.
    fields = {**entry.details, **entry.links}
    flat = [(k, v) for k, v in fields.items() if not isinstance(v, dict | list)]
    nested = [(k, v) for k, v in fields.items() if isinstance(v, dict | list)]
    parts = [f"{k}={_short(v)}" for k, v in flat + nested if v not in (None, "", {}, [])]
    text = ", ".join(parts)
    return text if len(text) <= _DETAIL_WIDTH else text[: _DETAIL_WIDTH - 3] + "..."


@app.command()
def show(
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Only entries about this dataset.")
    ] = None,
    who: Annotated[
        str | None, typer.Option("--who", help="Only entries by this principal (svc:NAME).")
    ] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="Only this action, e.g. access.grant.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only entries since: 24h, 7d, or a date/time (UTC)."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Show at most this many (the latest).")
    ] = DEFAULT_LIMIT,
    as_json: JsonOption = False,
) -> None:
    """The latest trail entries: who did what, when, to which dataset, why, and the outcome.

    Needs trail.read (owners and auditors; an auditor of one dataset may read its entries).
    """
    from veil.access import Permission  # noqa: PLC0415

    since_at = None if since is None else parse_since(since)
    with open_access() as access:
        access.require(Permission.TRAIL_READ, dataset, action="trail.show")
        entries = access.trail.entries(
            dataset=dataset, actor=who, since=since_at, action=action, limit=limit + 1
        )
    truncated = len(entries) > limit
    entries = entries[-limit:]
    if as_json:
        print_json(
            {
                "entries": [e.to_dict() for e in entries],
                "shown": len(entries),
                "limit": limit,
                "truncated": truncated,
                "filters": {
                    "dataset": dataset,
                    "who": who,
                    "action": action,
                    "since": None if since_at is None else since_at.isoformat(),
                },
            }
        )
        return
    if not entries:
        out.print("No trail entry matches.")
        return
    table = Table()
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("when (UTC)")
    table.add_column("who")
    table.add_column("action")
    table.add_column("dataset")
    table.add_column("outcome", no_wrap=True)
    table.add_column("purpose / details", overflow="fold")
    for entry in entries:
        outcome = str(entry.outcome)
        table.add_row(
            str(entry.seq),
            entry.at[:19].replace("T", " "),
            Text(entry.actor),
            Text(entry.action),
            Text(entry.dataset or ""),
            Text(outcome, style=_OUTCOME_STYLE.get(outcome, "")),
            Text.assemble(entry.purpose, "\n" if entry.purpose else "", (_details(entry), "dim")),
        )
    out.print(table)
    if truncated:
        out.print(
            f"Showing the latest {limit} matching entries; older ones exist "
            "(--limit N shows more, --since narrows)."
        )


def _read_head(path: Path) -> TreeHead:
    from veil.access import TreeHead  # noqa: PLC0415

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(
            "the exported head file does not exist",
            expected="a file written by `veil trail checkpoint -o FILE`",
            got=str(path),
            fix="give the path of the head you exported and kept elsewhere",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(
            "the exported head file cannot be read",
            expected="a readable JSON file written by `veil trail checkpoint -o FILE`",
            got=f"{path}: {exc}",
            fix="check the path and its permissions",
        ) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(
            "the exported head file is not JSON",
            expected="the JSON object written by `veil trail checkpoint -o FILE`",
            got=f"{path}: {exc}",
            fix="give the head file itself, unchanged",
        ) from None
    if not isinstance(data, dict):
        data = {"format": None, "size": -1, "root": ""}
    return TreeHead.from_dict(data)


def _exported(report: TrailReport, public_key: str | None) -> dict[str, Any] | None:
    """What the exported head showed: signed by the trail's key, contained, consistent."""
    from veil.access.verifier import verify_head  # noqa: PLC0415

    head = report.exported_head
    if head is None:
        return None
    size, root = int(head["size"]), str(head["root"])
    contained = (
        size == 0
        or (size == report.size and root == report.root)
        or (size < report.size and bool(report.consistency_proof))
    )
    return {
        "size": size,
        "root": root,
        "timestamp": head["timestamp"],
        "signed_by_trail_key": verify_head(head, bytes.fromhex(public_key) if public_key else None),
        "contained": contained,
        "consistency_verified": contained
        and not any(p.kind == "consistency" for p in report.problems),
        "consistency_proof_hashes": len(report.consistency_proof),
    }


def _failure(report: TrailReport) -> StoreError:
    first = report.problems[0]
    where = f"entry {report.first_bad}" if report.first_bad is not None else "the trail"
    return StoreError(
        f"the trail failed verification at {where}",
        expected="every entry to match its hash chain, the Merkle tree, the signed heads "
        "and the ledger",
        got=f"{len(report.problems)} problem(s), the first: {first.message}",
        fix=f"treat entries from {where} on as untrusted; find who could write the database, "
        "and restore it from a backup that verifies against the head you exported",
        details={"first_bad": report.first_bad, "problems": len(report.problems)},
    )


@app.command()
def verify(
    head: Annotated[
        Path | None,
        typer.Option(
            "--head",
            help="A head exported earlier (veil trail checkpoint -o FILE): the trail must still "
            "contain it, which detects truncation and a wholesale rewrite.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check every entry, the signed heads and the ledger; exit 11 if anything is wrong.

    Names the first bad entry. Needs trail.read.
    """
    from veil.access import Permission  # noqa: PLC0415

    exported = None if head is None else _read_head(head)
    with open_access() as access:
        access.require(Permission.TRAIL_READ, action="trail.verify")
        with progress_bar() as progress:
            report = access.trail.verify(head=exported, progress=progress)
        public_key = access.trail.public_key
    summary = _exported(report, public_key)
    failure = None if report.ok else _failure(report)
    if as_json:
        payload = report.to_dict() | {"exported": summary}
        if failure is not None:
            payload["error"] = failure.to_dict()
        print_json(payload)
        if failure is not None:
            raise typer.Exit(failure.exit_code)
        return
    rate = report.size / report.seconds if report.seconds > 0 else float("inf")
    table = Table("check", "result")
    table.add_row("entries checked", f"{report.size:,}")
    table.add_row("rate", f"{rate:,.0f} entries/s ({report.seconds:.3f} s)")
    table.add_row("root", report.root)
    table.add_row("signed heads checked", f"{report.heads_checked:,}")
    table.add_row("ledger events matched", f"{report.ledger_events_checked:,}")
    table.add_row("budgets matched", f"{report.budgets_checked:,}")
    if summary is not None:
        table.add_row(
            "exported head",
            f"size {summary['size']:,}, root {summary['root'][:16]}..., "
            + ("signed by the trail's key" if summary["signed_by_trail_key"] else "NOT signed"),
        )
        table.add_row(
            "contained",
            "yes" if summary["contained"] else "NO: the trail no longer holds it",
        )
        table.add_row(
            "consistency proof",
            f"verified ({summary['consistency_proof_hashes']} hashes)"
            if summary["consistency_verified"]
            else "not verified",
        )
    out.print(table)
    for warning in report.warnings:
        out.print(Text(f"warning: {warning}", style="yellow"))
    for problem in report.problems:
        where = "" if problem.seq is None else f"entry {problem.seq}: "
        out.print(Text(f"problem [{problem.kind}] {where}{problem.message}", style="red"))
    if failure is not None:
        raise failure
    extra = " and extends the exported head" if summary is not None else ""
    out.print(f"The trail is intact: {report.size:,} entries{extra}.")


def _check_hint(file: str, public_key: str | None) -> list[str]:
    """How to check a proof file: the verifier is one standalone file (no Veil import)."""
    from veil.access import verifier  # noqa: PLC0415

    key = f" --public-key {public_key}" if public_key else ""
    return [
        f"python {verifier.__file__} {file}{key}",
        (
            f"(or copy that file elsewhere: python verifier.py {file}{key}; it needs only the "
            "cryptography package)"
        ),
    ]


@app.command()
def prove(
    seq: Annotated[int, typer.Argument(min=1, help="The entry number (# in veil trail show).")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the proof to this file.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """An inclusion proof of entry SEQ under a signed head, for the standalone verifier.

    Needs trail.read.
    """
    from veil import _io  # noqa: PLC0415
    from veil.access import Permission  # noqa: PLC0415

    with open_access() as access:
        access.require(Permission.TRAIL_READ, action="trail.prove")
        document = access.trail.prove(seq)
        public_key = access.trail.public_key
    text = _io.dumps(document, indent=2) + "\n"
    if output is not None:
        write_json_atomic(output, document)  # owner-only: a body names who did what
    hints = _check_hint(str(output) if output else "proof.json", public_key)
    if as_json:
        print_json(
            {
                "seq": seq,
                "file": None if output is None else str(output),
                "bytes": len(text.encode("utf-8")),
                "public_key": public_key,
                "check": hints[0],
                "proof": document,
            }
        )
        return
    if output is None:
        print_json(document)  # the document itself, ready to redirect into a file
        err.print(
            f"Save it (veil trail prove {seq} -o proof.json) and check it with:", markup=False
        )
        for hint in hints:
            err.print(f"  {hint}", markup=False, soft_wrap=True)
        return
    head = document["head"]
    out.print(
        Text(
            f"Proof of entry {seq} under the signed head of {head['size']:,} entries "
            f"(root {head['root'][:16]}...): {len(document['proof'])} hash(es), "
            f"{len(text.encode('utf-8')):,} bytes, written to {output}."
        )
    )
    out.print("Check it without trusting Veil:", markup=False)
    for hint in hints:
        out.print(f"  {hint}", markup=False, soft_wrap=True)


@app.command()
def checkpoint(
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Write the signed head to this file.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Sign the trail's current head and export it: keep the file away from this workspace.

    Needs trail.checkpoint (owners).
    """
    from veil.access import Permission  # noqa: PLC0415

    with open_access() as access:
        access.require(Permission.TRAIL_CHECKPOINT, action="trail.checkpoint")
        head = access.trail.checkpoint()
    document = head.to_dict()
    write_json_atomic(output, document, owner_only=False)  # a signed head is no secret
    if as_json:
        print_json({"file": str(output), "head": document})
        return
    table = Table("signed head", "")
    table.add_row("entries", f"{head.size:,}")
    table.add_row("root", head.root)
    table.add_row("signed at (UTC)", head.timestamp)
    table.add_row("public key", head.public_key or "")
    table.add_row("written to", Text(str(output)))
    out.print(table)
    out.print(
        Text(
            "Keep a copy where nobody who can write this workspace's database can change it "
            "(another machine, the auditor, a ticket). Later, `veil trail verify --head "
            f"{output}` shows whether the trail still extends it: truncation or a rewrite "
            "of the whole trail cannot hide from it."
        )
    )
