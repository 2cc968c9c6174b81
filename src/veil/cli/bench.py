"""``veil bench``: benchmarks that write JSON and a readable table."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from veil.cli._output import out, print_json, progress_bar

__all__ = ["app", "query"]

app = typer.Typer(help="Benchmarks: JSON plus a readable table.", no_args_is_help=True)

# veil.bench (Polars, NumPy; OpenDP and diffprivlib in its subprocesses) loads inside the command.
DEFAULT_OUTPUT = "bench-query.json"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` atomically: a complete file or none at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(payload, stream, indent=2, default=str)
            stream.write("\n")
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def render_query_report(report: dict[str, Any]) -> None:
    """The benchmark as a table, then its set-up and whether the goals are met."""
    params = report["parameters"]
    table = Table(
        title=(
            f"{report['query']}: {params['rows']:,} rows, {params['groups']} groups, "
            f"epsilon={params['epsilon']:g}, {params['repeats']} repeat(s)"
        ),
    )
    table.add_column("library", no_wrap=True)
    for header in ("median s", "min s", "x raw", "peak RSS MB", "memory x raw"):
        table.add_column(header, justify="right")
    table.add_column("notes")
    for r in report["results"]:
        mem = r["memory"]
        table.add_row(
            r["library"],
            _seconds(r["median_s"]),
            _seconds(r["min_s"]),
            _times(r["ratio_to_raw"]),
            _mb(mem.get("peak_rss_mb")),
            _times(mem.get("peak_ratio_to_raw")),
            r["summary"],
        )
    out.print(table)
    for r in report["results"]:
        for note in r["notes"]:
            out.print(f"· {r['library']}: {note}", markup=False)
    machine = report["machine"]
    out.print(
        f"· {report['table']['note']}; machine: {machine['cpus']} CPUs, "
        f"{machine['memory_gb']} GB, Python {machine['python']}"
    )
    out.print("· times and memory are noisy on a shared machine: compare the ratios")
    goals = report["goals"]

    def verdict(flag: bool | None) -> str:
        return "n/a" if flag is None else ("met" if flag else "NOT met")

    out.print(
        f"· goals for veil: time within 1.5x raw {verdict(goals['time_within_1_5x_raw'])}; "
        f"faster than every other DP library {verdict(goals['faster_than_other_dp'])}; "
        f"peak memory within 2x raw {verdict(goals['memory_within_2x_raw'])}"
    )


@app.command()
def query(
    rows: Annotated[int, typer.Option("--rows", help="Rows (people) in the table.")] = 10_000_000,
    groups: Annotated[
        int, typer.Option("--groups", help="Groups (declared categories of g).")
    ] = 100,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed runs per library.")] = 3,
    libraries: Annotated[
        str,
        typer.Option("--libraries", help="Comma-separated: raw, veil, opendp, diffprivlib."),
    ] = "raw,veil,opendp,diffprivlib",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic data.")] = 0,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the JSON report.")
    ] = Path(DEFAULT_OUTPUT),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON instead of a table.")
    ] = False,
) -> None:
    """Time COUNT, SUM and AVG per group: raw Polars, Veil, OpenDP and diffprivlib.

    A deterministic synthetic table (one row per person, declared groups, x in
    [0, 100]); every DP library at epsilon = 1. Writes the JSON report to
    --output (bench-query.json by default) and prints a table.
    """
    from veil.bench import run_query_benchmark  # noqa: PLC0415

    with progress_bar() as progress:
        report = run_query_benchmark(
            rows=rows,
            groups=groups,
            repeats=repeats,
            seed=seed,
            libraries=libraries.split(","),
            progress=progress,
        )
    _write_json(output, report)
    if as_json:
        print_json(report)
        return
    render_query_report(report)
    out.print(f"Report written to {output}")
