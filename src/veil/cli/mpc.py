"""``veil mpc``: a sum or mean over several parties' private values, one process per party."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from veil.cli._output import out, print_json, progress_bar
from veil.errors import InvalidInputError

__all__ = ["app", "mean", "render_result", "sum_"]

app = typer.Typer(
    help="Secure multi-party computation: each party's values stay in its own process.",
    no_args_is_help=True,
)

# veil.mpc (NumPy) loads inside the commands, so that `veil --help` stays fast.

InputsArgument = Annotated[
    list[Path] | None,
    typer.Argument(help="One CSV file per party (a header row; see --column)."),
]
PartiesOption = Annotated[
    int | None,
    typer.Option("--parties", "-n", help="Number of parties (default: one per input file)."),
]
ProtocolOption = Annotated[
    str,
    typer.Option("--protocol", help="additive (n-of-n, Z_2^64) or shamir (t-of-n, GF(2^61-1))."),
]
ThresholdOption = Annotated[
    int | None,
    typer.Option("--threshold", "-t", help="Shamir: shares needed (default: a majority)."),
]
ColumnOption = Annotated[
    str | None, typer.Option("--column", "-c", help="The CSV column holding the values.")
]
FracOption = Annotated[
    int, typer.Option("--frac-bits", help="Fixed-point fractional bits (0 for integers).")
]
DemoOption = Annotated[
    int | None,
    typer.Option(
        "--demo",
        help="No files: each party gets N synthetic values in [0, 100) (seeded: not private).",
    ),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the --demo values.")]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="Seconds a silent party is waited for.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def render_result(payload: dict[str, Any]) -> None:
    """The opened result and what the computation cost, for people."""
    what = payload["operation"]
    table = Table(
        "result",
        "protocol",
        "parties",
        "contributors",
        "dropped",
        "time s",
        "bytes sent",
        title=f"secure {what} over {payload['parties']} parties (each in its own process)",
    )
    protocol = payload["protocol"]
    if protocol == "shamir":
        protocol += f" {payload['threshold']}-of-{payload['parties']}"
    dropped = ", ".join(f"{k} ({v})" for k, v in payload["dropped"].items()) or "-"
    table.add_row(
        f"{payload['value']:.6f}",
        protocol,
        str(payload["parties"]),
        ", ".join(str(c) for c in payload["contributors"]),
        dropped,
        f"{payload['seconds']:.2f}",
        f"{payload['total_bytes']:,}",
    )
    out.print(table)
    notes = [
        f"fixed point: {payload['frac_bits']} fractional bits (resolution {payload['resolution']:g})"
    ]
    if payload.get("count") is not None:
        notes.append(f"{payload['count']:,} values")
    if payload.get("plaintext") is not None:
        notes.append(f"plaintext check (demo values only): {payload['plaintext']:.6f}")
    out.print("· " + "; ".join(notes), markup=False)
    for node, lines in (payload.get("refused") or {}).items():
        for line in lines:  # outsiders turned away; the run itself was not affected
            out.print(f"· refused by node {node}: {line}", markup=False)


def _run(
    operation: str,
    inputs: list[Path] | None,
    *,
    parties: int | None,
    protocol: str,
    threshold: int | None,
    column: str | None,
    weights: str | None,
    frac_bits: int,
    demo: int | None,
    seed: int,
    timeout: float,
    as_json: bool,
) -> None:
    import numpy as np  # noqa: PLC0415

    from veil.mpc import run_parties  # noqa: PLC0415

    files = list(inputs or [])
    if files and demo is not None:
        raise InvalidInputError(
            "choose input files or --demo, not both",
            expected="veil mpc sum a.csv b.csv c.csv, or veil mpc sum --demo 1000",
            got=f"{len(files)} file(s) and --demo {demo}",
            fix="drop --demo to use the files",
        )
    if not files and demo is None:
        raise InvalidInputError(
            "veil mpc needs one input file per party",
            expected="veil mpc sum a.csv b.csv c.csv --column cost (or --demo N)",
            got="no input files",
            fix="pass one CSV per party, or --demo 1000 for synthetic values",
        )
    count = parties if parties is not None else (len(files) if files else 3)
    if files and count != len(files):
        raise InvalidInputError(
            "--parties does not match the input files",
            expected=f"one file per party ({count})",
            got=f"{len(files)} file(s)",
            fix="pass as many files as --parties, or drop --parties",
        )
    plaintext = None
    party_inputs: list[Any]
    second: list[Any] | None = None
    if demo is not None:
        if demo < 1:
            raise InvalidInputError(
                "--demo must be positive", expected="N >= 1", got=str(demo), fix="use --demo 1000"
            )
        party_inputs = [
            np.random.default_rng([seed, i]).uniform(0.0, 100.0, demo).round(2)
            for i in range(count)
        ]
        stacked = np.concatenate(party_inputs)
        plaintext = float(stacked.mean() if operation == "mean" else stacked.sum())
    else:
        party_inputs = files
        if weights is not None:
            second = files
    with progress_bar() as progress:
        result = run_parties(
            "mean" if operation == "mean" else "sum",
            party_inputs,
            second=second,
            column=column,
            second_column=weights,
            protocol=protocol,  # type: ignore[arg-type]
            threshold=threshold,
            frac_bits=frac_bits,
            timeout=timeout,
            progress=progress,
        )
    payload = result.to_dict() | {"plaintext": plaintext}
    if as_json:
        print_json(payload)
        return
    render_result(payload)


@app.command("sum")
def sum_(
    inputs: InputsArgument = None,
    parties: PartiesOption = None,
    protocol: ProtocolOption = "additive",
    threshold: ThresholdOption = None,
    column: ColumnOption = None,
    mean_: Annotated[bool, typer.Option("--mean", help="The mean instead of the sum.")] = False,
    frac_bits: FracOption = 16,
    demo: DemoOption = None,
    seed: SeedOption = 0,
    timeout: TimeoutOption = 30.0,
    as_json: JsonOption = False,
) -> None:
    """The sum of every party's values; only the total is revealed."""
    _run(
        "mean" if mean_ else "sum",
        inputs,
        parties=parties,
        protocol=protocol,
        threshold=threshold,
        column=column,
        weights=None,
        frac_bits=frac_bits,
        demo=demo,
        seed=seed,
        timeout=timeout,
        as_json=as_json,
    )


@app.command("mean")
def mean(
    inputs: InputsArgument = None,
    parties: PartiesOption = None,
    protocol: ProtocolOption = "additive",
    threshold: ThresholdOption = None,
    column: ColumnOption = None,
    weights: Annotated[
        str | None,
        typer.Option("--weights", "-w", help="A CSV column of weights: the weighted mean."),
    ] = None,
    frac_bits: FracOption = 16,
    demo: DemoOption = None,
    seed: SeedOption = 0,
    timeout: TimeoutOption = 30.0,
    as_json: JsonOption = False,
) -> None:
    """The (weighted) mean of every party's values; reveals the total and the count only."""
    if weights is not None and demo is not None:
        raise InvalidInputError(
            "--weights needs input files",
            expected="CSV files with a weight column",
            got="--demo",
            fix="drop --weights with --demo",
        )
    _run(
        "mean",
        inputs,
        parties=parties,
        protocol=protocol,
        threshold=threshold,
        column=column,
        weights=weights,
        frac_bits=frac_bits,
        demo=demo,
        seed=seed,
        timeout=timeout,
        as_json=as_json,
    )
