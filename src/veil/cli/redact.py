"""``veil redact``: find and replace PII in a text file, decrypt it back, or score the detector.

Outside a workspace it works on plain files, as it always did (a keyed
operator needs the workspace's key store, so a workspace). Inside one, each
redaction is recorded on the trail (``text.redact``) and each decryption
(``text.decrypt``): the input and output paths, the operator, the ``--key``
name (never the key) and the counts per entity type. ``--decrypt`` restores
the PII, so it needs ``keys.use`` on the workspace (owners), checked before
the key is read; a failure after the check is recorded as failed.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from veil.cli._acting import failure_recorded, find_workspace, workspace_access
from veil.cli._output import out, print_json, progress_bar
from veil.errors import InvalidInputError
from veil.workspace import Workspace

__all__ = ["redact", "render_evaluation"]

# veil.anonymize (and through it OpenDP; Presidio and spaCy on first use) loads inside the
# command, so that every other `veil` command starts fast.
_AUTO_WORKERS_BYTES = 2_000_000


def _auto_workers(path: Path) -> int:
    """One process for small files; one per CPU (at most 8) from 2 MB up."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    small = not path.is_file() or path.stat().st_size < _AUTO_WORKERS_BYTES
    return 1 if small else max(1, min(cpus, 8))


def _corpus_name(payload: dict[str, Any]) -> str:
    corpus = payload.get("corpus", "built-in")
    return "Veil's corpus" if corpus == "built-in" else corpus


def render_evaluation(payload: dict[str, Any]) -> None:
    """Per-entity precision, recall and F2 (overlap and strict), for people."""
    table = Table(
        "entity",
        "P",
        "R",
        "F2",
        "P strict",
        "R strict",
        "gold",
        title=(
            f"PII detection on the {payload['part']} part of {_corpus_name(payload)} "
            f"({payload['documents']} sentences, threshold {payload['threshold']})"
        ),
    )
    for kind, row in payload["overlap"].items():
        strict = payload["strict"][kind]
        style = "bold" if kind == "overall" else ""
        table.add_row(
            kind,
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f2']:.3f}",
            f"{strict['precision']:.3f}",
            f"{strict['recall']:.3f}",
            str(row["gold"]),
            style=style,
        )
    out.print(table)
    out.print(
        "· P, R, F2: same type and overlapping spans; strict: same type, start and end.",
        markup=False,
    )


def _render_report(payload: dict[str, Any], verb: str) -> None:
    table = Table("entity", "count", title=f"{verb} {payload['source']}")
    for kind, count in payload["entities"].items():
        table.add_row(kind, f"{count:,}")
    if payload["entities"]:
        out.print(table)
    out.print(
        f"{verb} {payload['lines']:,} lines ({payload['bytes'] / 1e6:.2f} MB) in "
        f"{payload['seconds']:.1f} s ({payload['mb_per_s']:.3f} MB/s, "
        f"{payload['workers']} process(es)): {payload['total_entities']:,} values -> "
        f"{payload['output']}",
        markup=False,
        soft_wrap=True,
    )


def _entities(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [e for e in (part.strip().upper() for part in value.split(",")) if e]


def redact(
    source: Annotated[
        Path | None,
        typer.Argument(help="UTF-8 text file to redact (or to decrypt with --decrypt)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="File to write (complete, or not at all)."),
    ] = None,
    operator: Annotated[
        str,
        typer.Option(
            "--operator",
            help="tag (<PERSON>), redact (remove), mask (keep the last --mask-keep characters), "
            "hash (keyed HMAC), encrypt (reversible with --decrypt), surrogate (consistent fakes).",
        ),
    ] = "tag",
    entities: Annotated[
        str | None,
        typer.Option("--entities", help="Comma-separated entity types (default: all)."),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold", help="Minimum detection score in [0, 1] (default: 0.5, tuned)."
        ),
    ] = None,
    key: Annotated[
        str,
        typer.Option("--key", help="Key store name of the secret for hash, encrypt and surrogate."),
    ] = "redact",
    mask_keep: Annotated[
        int, typer.Option("--mask-keep", help="Characters left visible by --operator mask.")
    ] = 4,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", help="Processes analysing the text; 0: one per CPU for files of 2 MB+."
        ),
    ] = 0,
    decrypt: Annotated[
        bool,
        typer.Option("--decrypt", help="Restore the values of a file redacted with encrypt."),
    ] = False,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--evaluate", help="Score the detector on the labelled corpus (no INPUT needed)."
        ),
    ] = False,
    part: Annotated[
        str, typer.Option("--part", help="Corpus part for --evaluate: test (held out) or tune.")
    ] = "test",
    corpus: Annotated[
        Path | None,
        typer.Option(
            "--corpus",
            help='Labelled corpus for --evaluate (JSON lines: {"text", "spans": '
            "[[start, end, TYPE], ...]}); default: Veil's own.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Find names, places, organisations, dates, contact details and IDs in text and replace them."""
    from veil.anonymize.text import load_text_libraries  # noqa: PLC0415

    load_text_libraries()  # the text extra, checked up front (and loaded without torch)
    from veil.anonymize import (  # noqa: PLC0415
        DEFAULT_THRESHOLD,
        decrypt_file,
        evaluate_pii,
        redact_file,
    )
    from veil.anonymize.text import KEYED_OPERATORS  # noqa: PLC0415

    cut = DEFAULT_THRESHOLD if threshold is None else threshold

    if evaluate:
        with progress_bar() as progress:
            if corpus is None:
                evaluation = evaluate_pii(part, threshold=cut, progress=progress)
            else:
                evaluation = evaluate_pii(part, threshold=cut, path=corpus, progress=progress)
            result = evaluation.to_dict()
        if as_json:
            print_json(result)
        else:
            render_evaluation(result)
        return
    if source is None or output is None:
        raise InvalidInputError(
            "veil redact needs an input file and -o OUTPUT",
            expected="veil redact INPUT -o OUTPUT",
            got=f"input {source or 'missing'}, output {output or 'missing'}",
            fix="for example: veil redact notes.txt -o notes.redacted.txt (or --evaluate)",
        )
    needs_key = decrypt or operator in KEYED_OPERATORS
    from veil.vault import KeyStore  # noqa: PLC0415

    action = "text.decrypt" if decrypt else "text.redact"
    entry = {
        "source": str(source.absolute()),
        "output": str(output.absolute()),
        "operator": "decrypt" if decrypt else operator,
        "key": key if needs_key else None,  # the name only, never the key
    }
    workspace = find_workspace()
    with ExitStack() as stack:
        access = None if workspace is None else stack.enter_context(workspace_access(workspace))
        if needs_key and access is not None:
            # --decrypt restores PII; a keyed hash or cipher makes linkable pseudonyms under
            # a workspace key: both are uses of the workspace's keys, owners only.
            from veil.access import Permission  # noqa: PLC0415

            access.require(Permission.KEYS_USE, action=action)
        with failure_recorded(access, action, details=entry):
            # --decrypt never creates a key: a new key could not open anything.
            secret = (
                KeyStore.for_workspace(Workspace.locate()).get(key, create=not decrypt)
                if needs_key
                else None
            )
            with progress_bar() as progress:
                if decrypt:
                    assert secret is not None  # noqa: S101 - needs_key above
                    report = decrypt_file(source, output, secret, progress=progress)
                else:
                    report = redact_file(
                        source,
                        output,
                        operator=operator,
                        key=secret,
                        entities=_entities(entities),
                        threshold=cut,
                        mask_keep=mask_keep,
                        workers=workers or _auto_workers(source),
                        progress=progress,
                    )
        payload = report.to_dict()
        if access is not None:
            access.record(
                action,
                details={
                    **entry,
                    "lines": payload["lines"],
                    "entities": payload["entities"],
                    "total_entities": payload["total_entities"],
                },
            )
    if as_json:
        print_json(payload)
        return
    _render_report(payload, "decrypted" if decrypt else "redacted")
