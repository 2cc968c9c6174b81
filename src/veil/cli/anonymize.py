"""``veil scan`` and ``veil anonymize``: re-identification risk of a table, and a safer release of it.

**Who may.** A registered dataset (named, or given by its file's path) is read
only through the catalogue, which checks ``dataset.read_rows`` and records the
load (``dataset.read``); ``anonymize`` also needs ``dataset.release_rows`` on
it (its output is row-level), checked first, and records the release
(``data.anonymise``: dataset, output, k / l / t, rows in and out). A
registered file that changed since its registration is refused, never read
around the catalogue. A file that is not registered needs no role beyond being
able to read it (Veil cannot guard a file the account can open anyway); inside
a workspace its release is still recorded, by path. Outside a workspace both
commands work on plain files, with nothing to check and nowhere to record.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from veil._io import atomic_path
from veil.cli._acting import find_workspace, workspace_access
from veil.cli._output import err, out, print_json, progress_bar, write_json_atomic
from veil.errors import DataTooLargeError, InvalidInputError, NotFoundError
from veil.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from veil.access import Access
    from veil.anonymize import AnonymizationResult
    from veil.data import Catalog, DatasetInfo
    from veil.store import Store

    Acting = tuple[Access, Catalog]

# pandas, NumPy and veil.data (SQLAlchemy) load inside the commands: `veil --help` stays fast.


def load_table(source: str, **options: Any) -> pd.DataFrame:
    """veil.data's loader, imported on first use."""
    from veil.data import load_table as load  # noqa: PLC0415

    return load(source, **options)


__all__ = ["anonymize", "render_scan", "scan", "write_table"]

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
QiOption = Annotated[
    str, typer.Option("--qi", help="Quasi-identifiers, comma-separated (age,zip,sex...).")
]
SensitiveOption = Annotated[
    str | None, typer.Option("--sensitive", help="Sensitive attributes, comma-separated.")
]
DelimiterOption = Annotated[
    str | None,
    typer.Option(
        "--delimiter",
        help="CSV delimiter of the files read (';', '\\t' for tab); ',' if omitted, and a file "
        "that looks otherwise is refused with the delimiter it seems to use.",
    ),
]
DropMissingOption = Annotated[
    bool,
    typer.Option(
        "--drop-missing",
        help="Drop rows with a missing quasi-identifier or sensitive value (counted in the report).",
    ),
]


def _columns(value: str | None) -> list[str]:
    return [c.strip() for c in (value or "").split(",") if c.strip()]


def _limit() -> int | None:
    try:
        return Workspace.locate().settings.max_load_bytes
    except NotFoundError:  # reading a file needs no workspace
        return None


def _options(delimiter: str | None) -> dict[str, Any]:
    if delimiter is None:
        return {}
    return {"delimiter": "\t" if delimiter in ("\\t", "tab") else delimiter}


def _read(source: str | None, delimiter: str | None) -> pd.DataFrame | None:
    if source is None:
        return None
    return load_table(source, max_load_bytes=_limit(), **_options(delimiter))


@contextmanager
def _acting() -> Iterator[Acting | None]:
    """Who acts and the catalogue they read through, in a workspace; ``None`` outside one."""
    workspace = find_workspace()
    if workspace is None:
        yield None
        return
    from veil.data import Catalog  # noqa: PLC0415

    with workspace_access(workspace) as access:
        yield access, Catalog(access.store, workspace.settings, access=access)


def _registration(store: Store, source: str) -> DatasetInfo | None:
    """The active registration that ``source`` names, or whose file it is.

    Looked up whoever acts: ``Catalog.list`` leaves out the datasets the
    principal may not see, and a registered file must still go through the
    catalogue's checks rather than be read around them as a plain file.
    """
    from sqlalchemy import select  # noqa: PLC0415

    from veil.data import DatasetInfo  # noqa: PLC0415
    from veil.store.tables import DatasetRow  # noqa: PLC0415

    path = Path(source).expanduser()
    if path.exists():
        where = DatasetRow.source == str(path.resolve())
    elif source.startswith("sklearn:"):
        return None
    else:
        where = DatasetRow.name == source
    with store.session() as session:
        found = [
            DatasetInfo.from_row(row) for row in session.scalars(select(DatasetRow).where(where))
        ]
    active = sorted((info for info in found if info.archived is None), key=lambda i: i.name)
    return active[0] if active else None


def _load_source(
    source: str,
    delimiter: str | None,
    acting: Acting | None,
    *,
    release: bool,
    purpose: str | None = None,
) -> tuple[pd.DataFrame, DatasetInfo | None]:
    """The input table, and its registration when it is a registered dataset.

    ``release``: the rows leave as a row-level output (``dataset.release_rows``,
    checked before the load). ``purpose``: why (a consent term on a dataset under
    consent management); a default that names the operation otherwise.
    """
    info = None if acting is None else _registration(acting[0].store, source)
    if acting is None or info is None:
        return load_table(source, max_load_bytes=_limit(), **_options(delimiter)), None
    from veil.access import Permission  # noqa: PLC0415
    from veil.data import DataUse  # noqa: PLC0415

    access, catalog = acting
    purpose = purpose or ("anonymise" if release else "re-identification risk scan")
    if release:
        access.require(
            Permission.DATASET_RELEASE_ROWS, info.name, action="data.anonymise", purpose=purpose
        )
    try:
        return catalog.load_frame(info.name, use=DataUse.RAW, purpose=purpose), info
    except DataTooLargeError:
        raise
    except InvalidInputError as why:
        if source == info.name:
            raise
        raise InvalidInputError(
            f"{source} is registered as '{info.name}', and is read only through the "
            f"catalogue, which refused it: {why.message}",
            expected=why.expected,
            got=why.got,
            fix=why.fix,
        ) from why


def _load(
    source: str,
    needed: list[str],
    acting: Acting | None,
    *,
    drop_missing: bool,
    delimiter: str | None = None,
    release: bool = False,
    purpose: str | None = None,
) -> tuple[pd.DataFrame, int, DatasetInfo | None]:
    frame, info = _load_source(source, delimiter, acting, release=release, purpose=purpose)
    dropped = 0
    present = [c for c in needed if c in frame.columns]
    if drop_missing and present:
        mask = frame[present].isna().any(axis=1)
        dropped = int(mask.sum())
        frame = frame.loc[~mask].reset_index(drop=True)
    return frame, dropped, info


def _record_lineage(access: Access, dataset_id: int, version: Any, output: Path, k: int) -> None:
    """Record the output as derived from the dataset, so an erasure lists it (issue 23)."""
    from veil.governance import record_artifact  # noqa: PLC0415

    with access.store.session(lock=True) as session:
        record_artifact(
            access,
            session,
            kind="anonymized",
            name=str(output.absolute()),
            dataset_id=dataset_id,
            version=None if version is None else int(version),
            details={"k": k},
        )


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write CSV or Parquet (by suffix) atomically, readable by the owner only."""
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".parquet"}:
        raise InvalidInputError(
            "unknown output format",
            expected="a .csv or .parquet output file",
            got=path.name,
            fix="name the output file with one of these suffixes",
        )
    with atomic_path(path) as temporary:
        if suffix == ".csv":
            frame.to_csv(temporary, index=False)
        else:
            frame.to_parquet(temporary, index=False)


def _external(
    path: str | None, truth: str | None, frame: pd.DataFrame, delimiter: str | None = None
) -> tuple[Any, Any]:
    if path is None:
        if truth is not None:
            raise InvalidInputError(
                "--external-id needs --external",
                expected="an external table to link",
                got="--external-id alone",
                fix="add --external FILE",
            )
        return None, None
    external = load_table(path, max_load_bytes=_limit(), **_options(delimiter))
    if truth is None:
        return external, None
    for table, where in ((frame, "the input"), (external, "the external table")):
        if truth not in table.columns:
            raise InvalidInputError(
                "the identity column is missing",
                expected=f"column {truth!r} in {where}",
                got=", ".join(map(str, table.columns[:8])),
                fix="name a column present in both tables",
            )
    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415

    position = pd.Series(np.arange(len(frame)), index=frame[truth].astype("string"))
    position = position[~position.index.duplicated(keep=False)]
    mapped = external[truth].astype("string").map(position)
    return external, mapped.fillna(-1).to_numpy(dtype=np.int64)


def _warn_unchanged(result: AnonymizationResult, k: int) -> None:
    """Say which columns went out as they were read, and which of them undo k if known."""
    columns = result.unchanged
    if not columns:
        return
    breaking = [c for c in columns if c.k_with_it < k]
    names = ", ".join(c.column for c in columns)
    if not breaking:
        err.print(f"Released as read (no generalisation, no operator): {names}.", markup=False)
        return
    worst = ", ".join(
        f"{c.column} (k {c.k_with_it}, {c.unique_rows:,} rows unique)" for c in breaking
    )
    err.print(
        f"WARNING: k holds for the quasi-identifiers only. Released as read: {names}. "
        f"An attacker who also knows one of these has a smaller k: {worst}. "
        "Fix: add the ones an attacker may know to --qi, transform or remove the others "
        "(--op COLUMN:drop, mask or pseudonymize), or name them in --sensitive.",
        style="bold yellow",
        markup=False,
        soft_wrap=True,
    )


def render_scan(report: dict[str, Any], title: str) -> None:  # noqa: C901, PLR0912 - one row per measure
    """The main figures of a scan, for people."""
    classes, risk = report["classes"], report["risk"]
    table = Table("measure", "value", title=title)
    table.add_row("records", f"{report['records']:,}")
    if report["suppressed"]:
        table.add_row("suppressed", f"{report['suppressed']:,}")
    table.add_row("equivalence classes", f"{classes['classes']:,}")
    table.add_row("k-anonymity (smallest class)", str(classes["k"]))
    table.add_row("unique records", f"{classes['unique_share']:.1%}")
    table.add_row("average class size", f"{classes['average_class_size']:.2f}")
    table.add_row(
        "prosecutor risk: max / average",
        f"{risk['prosecutor_max']:.3f} / {risk['prosecutor_average']:.3f}",
    )
    table.add_row(f"records at risk (> {risk['threshold']:g})", f"{risk['prosecutor_at_risk']:.1%}")
    journalist = f"{risk['journalist_max']:.3f}"
    if risk["population"] == "none":
        journalist += " (no population given: the prosecutor's risk, an upper bound)"
    else:
        journalist += f" (population from a {risk['population']})"
    table.add_row("journalist risk: max", journalist)
    table.add_row("marketer risk", f"{risk['marketer']:.3f}")
    for column, value in report["l_diversity"].items():
        table.add_row(
            f"l-diversity of {column}",
            f"distinct {value['distinct']}, entropy {value['entropy']:.2f}, recursive (c={value['recursive_c']:g}) {value['recursive_l']}",
        )
    for column, value in report["t_closeness"].items():
        table.add_row(f"t-closeness of {column}", f"{value:.3f}")
    if report["delta_presence"]:
        d = report["delta_presence"]
        table.add_row("delta-presence", f"{d['min']:.3f} .. {d['max']:.3f}")
    if report["population_uniqueness"]:
        p = report["population_uniqueness"]
        pitman = "n/a" if p["pitman"] is None else f"{p['pitman']:.2%}"
        table.add_row("population uniques (Pitman estimate)", pitman)
    if report["utility"]:
        u = report["utility"]
        table.add_row("information loss (GCP)", f"{u['gcp']:.3f}")
        table.add_row("discernibility", f"{u['discernibility']:.4g}")
        table.add_row("normalised average class size", f"{u['normalised_average_class_size']:.2f}")
    if report["classifier"]:
        c = report["classifier"]
        table.add_row(
            f"accuracy predicting {c['target']}",
            f"{c['accuracy']:.1%} (majority class {c['majority_class']:.1%})",
        )
    if report["linkage"]:
        link = report["linkage"]
        shown = f"{link['linked']:,} of {link['external_records']:,} external people linked to one record"
        if link["correct"] is not None:
            shown += f"; {link['correct']:,} correctly ({link['rate']:.1%} of those present)"
        table.add_row("linkage attack", shown)
    out.print(table)
    for column in report.get("pii_columns") or []:
        # Counts, not a rounded percentage: 199 of 200 is not "100%".
        share = f"{round(column['share'] * column['sampled']):,} of {column['sampled']:,} sampled values"
        if column.get("minority"):
            share = f"a minority: only {share}"
        basis = " by its name and values" if column.get("basis") == "name and values" else ""
        out.print(
            f"[bold red]PII column[/] {column['column']}: {column['entity_type']}{basis} "
            f"({share}, confidence {column['confidence']:.2f})"
        )


def scan(
    source: Annotated[
        str,
        typer.Argument(
            help="Table to scan: CSV, Parquet, UCI Adult file, sklearn:NAME or a registered dataset."
        ),
    ],
    qi: QiOption,
    sensitive: SensitiveOption = None,
    purpose: Annotated[
        str | None,
        typer.Option(
            "--purpose",
            help="Why (recorded); on a dataset under consent management a consent term, "
            'e.g. "research: cohort study".',
        ),
    ] = None,
    population: Annotated[
        str | None,
        typer.Option(
            "--population", help="The population table (journalist risk, delta-presence)."
        ),
    ] = None,
    population_size: Annotated[
        int | None,
        typer.Option("--population-size", help="Size of the population, for uniqueness estimates."),
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", help="Record risk counted as at risk.")
    ] = 0.2,
    target: Annotated[
        str | None, typer.Option("--target", help="Column to predict from the QIs (utility).")
    ] = None,
    external: Annotated[
        str | None,
        typer.Option("--external", help="An attacker's table sharing the QIs (linkage attack)."),
    ] = None,
    external_id: Annotated[
        str | None,
        typer.Option("--external-id", help="Identity column in both tables, to score the linkage."),
    ] = None,
    pii: Annotated[
        bool, typer.Option("--pii/--no-pii", help="Look for PII columns with Presidio.")
    ] = True,
    drop_missing: DropMissingOption = False,
    delimiter: DelimiterOption = None,
    as_json: JsonOption = False,
) -> None:
    """Measure how identifiable a table is: classes, risk, k / l / t, uniqueness, linkage, PII columns."""
    from veil.anonymize import scan_table  # noqa: PLC0415 - keeps `veil --help` fast

    keys, sens = _columns(qi), _columns(sensitive)
    with _acting() as acting:
        frame, dropped, _ = _load(
            source,
            keys + sens,
            acting,
            drop_missing=drop_missing,
            delimiter=delimiter,
            purpose=purpose,
        )
    pop = _read(population, delimiter)
    ext, truth = _external(external, external_id, frame, delimiter)
    report = scan_table(
        frame,
        keys,
        sensitive=sens,
        population=pop,
        population_size=population_size,
        threshold=threshold,
        target=target,
        external=ext,
        external_truth=truth,
        find_pii=pii,
    ).to_dict()
    report["dropped_missing"] = dropped
    if as_json:
        print_json(report)
        return
    render_scan(report, f"scan of {source}")
    if dropped:
        out.print(f"{dropped:,} rows with missing values were dropped before scanning.")


def anonymize(
    source: Annotated[
        str,
        typer.Argument(
            help="Table to anonymise: CSV, Parquet, UCI Adult file, sklearn:NAME, or a registered "
            "dataset (by name or its file: numeric quasi-identifiers are binned within its "
            "declared bounds)."
        ),
    ],
    qi: QiOption,
    k: Annotated[int, typer.Option("--k", help="Smallest equivalence class.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="The released table (.csv or .parquet).")
    ],
    sensitive: SensitiveOption = None,
    purpose: Annotated[
        str | None,
        typer.Option(
            "--purpose",
            help="Why (recorded); on a dataset under consent management a consent term, "
            'e.g. "research: cohort study".',
        ),
    ] = None,
    l_value: Annotated[
        int | None, typer.Option("--l", help="Distinct l-diversity of the first sensitive column.")
    ] = None,
    t_value: Annotated[
        float | None, typer.Option("--t", help="t-closeness of the first sensitive column.")
    ] = None,
    algorithm: Annotated[
        str,
        typer.Option(
            "--algorithm",
            help="mondrian (strict, local recoding), mondrian-relaxed, or full-domain (optimal global recoding).",
        ),
    ] = "mondrian",
    hierarchies: Annotated[
        Path | None, typer.Option("--hierarchies", help="YAML or JSON generalisation hierarchies.")
    ] = None,
    max_suppression: Annotated[
        float, typer.Option("--max-suppression", help="full-domain: largest share suppressed.")
    ] = 0.05,
    op: Annotated[
        list[str] | None,
        typer.Option(
            "--op",
            help="COLUMN:OPERATOR[:opt=value,...] for other columns: drop, mask, pseudonymize, swap, noise, microaggregate, shift-dates. Repeatable.",
        ),
    ] = None,
    key_name: Annotated[
        str, typer.Option("--key", help="Key-store key of pseudonymize and shift-dates.")
    ] = "pseudonyms",
    target: Annotated[
        str | None, typer.Option("--target", help="Column to predict, before and after (utility).")
    ] = None,
    external: Annotated[
        str | None, typer.Option("--external", help="An attacker's table (linkage attack).")
    ] = None,
    external_id: Annotated[
        str | None, typer.Option("--external-id", help="Identity column in both tables.")
    ] = None,
    population_size: Annotated[
        int | None, typer.Option("--population-size", help="Population size (uniqueness).")
    ] = None,
    report_path: Annotated[
        Path | None, typer.Option("--report", help="Also write the JSON report to this file.")
    ] = None,
    drop_missing: DropMissingOption = False,
    delimiter: DelimiterOption = None,
    as_json: JsonOption = False,
) -> None:
    """Generalise the quasi-identifiers to k-anonymity (and l, t), transform other columns, report before and after."""
    from veil.anonymize import ColumnOperation, load_hierarchies  # noqa: PLC0415
    from veil.anonymize import anonymize as run  # noqa: PLC0415

    keys, sens = _columns(qi), _columns(sensitive)
    operations = [ColumnOperation.parse(text) for text in op or []]
    specs = load_hierarchies(hierarchies) if hierarchies else None
    with _acting() as acting:
        frame, dropped, info = _load(
            source,
            keys + sens,
            acting,
            drop_missing=drop_missing,
            delimiter=delimiter,
            release=True,
            purpose=purpose,
        )
        version = frame.attrs.get("veil.version")  # the managed version read (None: reference)
        key = None
        keyed = any(o.operator in {"pseudonymize", "shift-dates"} for o in operations)
        if keyed:
            from veil.vault import KeyStore  # noqa: PLC0415

            if acting is not None:  # a workspace key makes linkable pseudonyms: owners only
                from veil.access import Permission  # noqa: PLC0415

                acting[0].require(Permission.KEYS_USE, action="data.anonymise")
            key = KeyStore.for_workspace(Workspace.locate()).get(key_name)
        ext, truth = _external(external, external_id, frame, delimiter)
        with progress_bar() as progress:
            result = run(
                frame,
                keys,
                k=k,
                sensitive=sens,
                l=l_value,
                t=t_value,
                algorithm=algorithm,
                hierarchies=specs,
                max_suppression=max_suppression,
                operations=operations,
                key=key,
                target=target,
                external=ext,
                external_truth=truth,
                population_size=population_size,
                declared_bounds=info.schema.bounds if info is not None else None,
                progress=progress,
            )
        if external_id is not None and external_id in result.table.columns:
            # the identity column was needed to score the attack; it must not be released
            result = replace(
                result,
                table=result.table.drop(columns=[external_id]),
                unchanged=[c for c in result.unchanged if c.column != external_id],
            )
        write_table(result.table, output)
        if acting is not None:
            acting[0].record(
                "data.anonymise",
                dataset=None if info is None else info.name,
                purpose=purpose or "anonymise",
                links={}
                if info is None
                else {"dataset_id": info.dataset_id, "content_sha256": info.content_sha256},
                details={
                    "source": source if info is not None else str(Path(source).absolute()),
                    "output": str(output.absolute()),
                    "k": k,
                    "l": l_value,
                    "t": t_value,
                    "algorithm": result.algorithm,
                    "rows_in": len(frame) + dropped,
                    "rows_out": len(result.table),
                    "dropped_missing": dropped,
                    "key": key_name if keyed else None,
                    "satisfied": dict(result.satisfied),
                    "unchanged": [c.column for c in result.unchanged],
                },
            )
            if info is not None and info.dataset_id is not None:
                _record_lineage(acting[0], info.dataset_id, version, output, k)
    report = {**result.to_dict(), "output": str(output), "dropped_missing": dropped}
    if report_path is not None:
        write_json_atomic(report_path, report, owner_only=True)
    if as_json:
        print_json(report)
        _warn_unchanged(result, k)  # on standard error: the JSON stays clean
        return
    render_scan(report["before"], f"before: {source}")
    render_scan(report["after"], f"after: {output} ({result.algorithm}, {result.seconds:.2f} s)")
    checks = ", ".join(
        f"{name} {'met' if ok else 'NOT MET'}" for name, ok in result.satisfied.items()
    )
    out.print(f"Constraints measured on the output: {checks}.")
    _warn_unchanged(result, k)
    if info is not None:
        used = (
            ", ".join(f"{c} {note}" for c, note in result.declared_bounds.items()) or "none apply"
        )
        out.print(f"'{info.name}' is registered; bounds declared at registration: {used}.")
    if dropped:
        out.print(f"{dropped:,} rows with missing values were dropped first.")
