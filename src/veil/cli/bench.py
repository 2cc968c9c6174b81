"""``veil bench``: benchmarks that write JSON and a readable table.

Each command parses its options, calls ``veil.bench.run_*_benchmark``, writes
the result's ``to_dict()`` and draws the result with :func:`render`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

# The names below load only veil.bench's result types; each benchmark (PyTorch, Polars,
# Flower, TenSEAL) loads inside its command.
from veil.bench import BenchResult
from veil.bench import Table as TableView
from veil.cli._output import out, print_json, progress_bar
from veil.cli._output import write_json_atomic as _write_json
from veil.errors import InvalidInputError

__all__ = [
    "anonymize",
    "app",
    "audit",
    "dpsgd",
    "federated",
    "he",
    "ledger",
    "mnist",
    "mpc",
    "query",
    "render",
    "serve",
    "synth",
    "trail",
    "unlearning",
]

app = typer.Typer(help="Benchmarks: JSON plus a readable table.", no_args_is_help=True)

DEFAULT_OUTPUT = "bench-query.json"
SPARK_OUTPUT = "bench-query-spark.json"


def _width(markup: str) -> int:
    return Text.from_markup(markup).cell_len


def _render_table(block: TableView) -> None:
    """A table whose values are never cut: as a grid where it fits, else one record per row.

    Each column is at least as wide as its longest value (headers wrap at
    spaces instead). Where even that is wider than the console (many columns
    in an 80-column terminal), every row is printed as its own two-column
    record, header and value, so that no number is lost to an ellipsis.
    """
    cells = [
        [column.cell(v) for column, v in zip(block.columns, row, strict=True)] for row in block.rows
    ]
    widths = [
        max(
            [max((len(word) for word in column.header.split()), default=1)]
            + [_width(row[i]) for row in cells]
        )
        for i, column in enumerate(block.columns)
    ]
    if sum(widths) + 3 * len(widths) + 1 <= out.width:  # a rich grid: 3 per column, 1 edge
        table = Table(title=block.title)
        for column, width in zip(block.columns, widths, strict=True):
            table.add_column(
                column.header, justify=column.justify, no_wrap=column.no_wrap, min_width=width
            )
        for row in cells:
            table.add_row(*row)
        out.print(table)
        return
    out.print(Text(block.title, style="italic"), justify="center")
    for row in cells:
        record = Table(show_header=False, box=box.SIMPLE, padding=(0, 1))
        record.add_column(justify="left", no_wrap=True)
        record.add_column(justify="left", overflow="fold")
        for column, value in zip(block.columns, row, strict=True):
            record.add_row(column.header, value)
        out.print(record)


def render(result: BenchResult) -> None:
    """Print any benchmark result: its tables and notes, in the order its view gives them."""
    for block in result.view():
        if isinstance(block, TableView):
            _render_table(block)
        else:
            out.print(block.text, markup=block.markup)


def _finish(result: BenchResult, output: Path, *, as_json: bool) -> None:
    """Write the JSON report, then print it as JSON or as tables."""
    report = result.to_dict()
    _write_json(output, report)
    if as_json:
        print_json(report)
        return
    render(result)
    out.print(f"Report written to {output}")


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
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help=f"Where to write the JSON report ({DEFAULT_OUTPUT}; with --engine spark "
            f"{SPARK_OUTPUT}).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON instead of a table.")
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="polars: Veil against other DP libraries; spark: the Spark engine against "
            "Polars (identity, time, a large table).",
        ),
    ] = "polars",
    spark_master: Annotated[
        str, typer.Option("--spark-master", help="Spark master URL (--engine spark).")
    ] = "local[2]",
    large_rows: Annotated[
        int,
        typer.Option(
            "--large-rows", help="Rows of the Spark-only large table (--engine spark); 0 skips it."
        ),
    ] = 200_000_000,
) -> None:
    """Time COUNT, SUM and AVG per group: raw Polars, Veil, OpenDP and diffprivlib.

    A deterministic synthetic table (one row per person, declared groups, x in
    [0, 100]); every DP library at epsilon = 1. Writes the JSON report to
    --output (bench-query.json by default) and prints a table. With --engine
    spark: Polars and Spark read the same Parquet file; their aggregates and
    releases are compared, their times measured, and Spark runs a large table.
    """
    from veil.bench import run_query_benchmark  # noqa: PLC0415

    if engine.strip().lower() == "spark":
        from veil.bench import run_spark_query_benchmark  # noqa: PLC0415

        with progress_bar() as progress:
            spark_result = run_spark_query_benchmark(
                rows=rows,
                groups=groups,
                repeats=repeats,
                seed=seed,
                spark_master=spark_master,
                large_rows=large_rows,
                progress=progress,
            )
        _finish(spark_result, output or Path(SPARK_OUTPUT), as_json=as_json)
        return
    if engine.strip().lower() != "polars":
        raise InvalidInputError(
            "unknown --engine", expected="polars or spark", got=repr(engine), fix="--engine spark"
        )
    with progress_bar() as progress:
        result = run_query_benchmark(
            rows=rows,
            groups=groups,
            repeats=repeats,
            seed=seed,
            libraries=libraries.split(","),
            progress=progress,
        )
    _finish(result, output or Path(DEFAULT_OUTPUT), as_json=as_json)


DataOption = Annotated[
    Path,
    typer.Option("--data", help="Folder holding mnist/ and adult/ (the project's shared data)."),
]
DEFAULT_DATA = Path("../shared/data")
# `veil bench synth` stops a generator after this many minutes by default: the reference AIM
# on mbi 2.0 does not finish on the whole of Adult (it ran past 50 minutes here).
SYNTH_TIME_LIMIT_MIN = 30.0


@app.command()
def dpsgd(
    data: DataOption = DEFAULT_DATA,
    models: Annotated[
        str, typer.Option("--models", help="Comma-separated: linear, mlp, cnn.")
    ] = "linear,mlp,cnn",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size for timing.")] = 256,
    timing_epochs: Annotated[
        int, typer.Option("--timing-epochs", help="Epochs timed per run.")
    ] = 2,
    train_size: Annotated[
        int | None, typer.Option("--train-size", help="Use only the first N training images.")
    ] = None,
    test_size: Annotated[
        int | None,
        typer.Option("--test-size", help="Use only the first N test images (and Adult test rows)."),
    ] = None,
    accuracy_epochs: Annotated[
        int, typer.Option("--accuracy-epochs", help="Epochs of the epsilon-3 runs.")
    ] = 30,
    accuracy_models: Annotated[
        str, typer.Option("--accuracy-models", help="Models of the epsilon-3 runs.")
    ] = "scatternet,cnn",
    no_accuracy: Annotated[
        bool, typer.Option("--no-accuracy", help="Timing only (skip the accuracy runs).")
    ] = False,
    no_opacus: Annotated[bool, typer.Option("--no-opacus", help="Skip the Opacus rows.")] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON report.")] = Path(
        "bench-dpsgd.json"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """DP-SGD time per epoch against non-private training; MNIST at epsilon 3; Adult at epsilon 1."""
    from veil.bench import run_dpsgd_benchmark  # noqa: PLC0415

    with progress_bar() as progress:
        result = run_dpsgd_benchmark(
            data,
            models=[m.strip() for m in models.split(",") if m.strip()],
            batch_size=batch_size,
            timing_epochs=timing_epochs,
            train_size=train_size,
            test_size=test_size,
            accuracy_epochs=accuracy_epochs,
            accuracy_models=[m.strip() for m in accuracy_models.split(",") if m.strip()],
            opacus=not no_opacus,
            accuracy=not no_accuracy,
            progress=progress,
        )
    _finish(result, output, as_json=as_json)


@app.command()
def mnist(
    data: DataOption = DEFAULT_DATA,
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs of every run.")] = 30,
    model: Annotated[
        str, typer.Option("--model", help="scatternet, cnn, mlp or logreg.")
    ] = "scatternet",
    train_size: Annotated[
        int | None, typer.Option("--train-size", help="Use only the first N training images.")
    ] = None,
    encrypted: Annotated[
        bool, typer.Option("--encrypted/--no-encrypted", help="Add the CKKS rows (veil bench he).")
    ] = True,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON report.")] = Path(
        "bench-mnist.json"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """The MNIST comparison: non-private and DP-SGD at epsilon 1, 3, 8 (delta 1e-5)."""
    from veil.bench import run_mnist_benchmark  # noqa: PLC0415

    with progress_bar() as progress:
        result = run_mnist_benchmark(
            data,
            epochs=epochs,
            model=model,
            train_size=train_size,
            encrypted=encrypted,
            progress=progress,
        )
    _finish(result, output, as_json=as_json)


@app.command()
def audit(
    data: DataOption = DEFAULT_DATA,
    datasets: Annotated[
        str, typer.Option("--datasets", help="Comma-separated: adult, mnist.")
    ] = "adult,mnist",
    recipes: Annotated[
        str,
        typer.Option("--recipes", help="Comma-separated: overfit, regularised, dp_eps1, dp_eps8."),
    ] = "overfit,regularised,dp_eps1,dp_eps8",
    pool: Annotated[
        int, typer.Option("--pool", help="Records per dataset (half go to the target).")
    ] = 10_000,
    references: Annotated[int, typer.Option("--references", help="Reference models (even).")] = 16,
    canaries: Annotated[
        int, typer.Option("--canaries", help="Canaries of the DP audit (0: none).")
    ] = 500,
    tiny: Annotated[
        bool, typer.Option("--tiny", help="2 epochs, 16 hidden units: a smoke run.")
    ] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON report.")] = Path(
        "bench-audit.json"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """LiRA and RMIA against overfit, regularised and DP-SGD models on Adult and MNIST."""
    from veil.bench import run_audit_benchmark  # noqa: PLC0415

    with progress_bar() as progress:
        result = run_audit_benchmark(
            data,
            datasets=tuple(d.strip() for d in datasets.split(",") if d.strip()),
            recipes=tuple(r.strip() for r in recipes.split(",") if r.strip()),
            pool=pool,
            references=references,
            canaries=canaries,
            tiny=tiny,
            progress=progress,
        )
    _finish(result, output, as_json=as_json)


@app.command("anonymize")
def anonymize(
    data: DataOption = DEFAULT_DATA,
    ks: Annotated[str, typer.Option("--k", help="Comma-separated k values.")] = "5,10",
    repeats: Annotated[int, typer.Option("--repeats", help="Timed runs (median).")] = 3,
    rows: Annotated[
        int | None, typer.Option("--rows", help="Only the first ROWS rows (a smoke run).")
    ] = None,
    text: Annotated[
        bool, typer.Option("--text/--no-text", help="Also measure PII redaction of text.")
    ] = True,
    tiny: Annotated[
        bool, typer.Option("--tiny", help="A smoke run: 2,000 rows, 1 repeat, tiny text file.")
    ] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON report.")] = Path(
        "bench-anonymize.json"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Mondrian and full-domain anonymisation of UCI Adult (k = 5, 10), and PII redaction."""
    from veil.bench import run_anonymize_benchmark  # noqa: PLC0415

    with progress_bar() as progress:
        result = run_anonymize_benchmark(
            data,
            ks=tuple(int(k) for k in ks.split(",") if k.strip()),
            repeats=1 if tiny else repeats,
            rows=2000 if tiny and rows is None else rows,
            text=text,
            text_size="tiny" if tiny else "full",
            progress=progress,
        )
    _finish(result, output, as_json=as_json)


@app.command("mpc")
def mpc(
    size: Annotated[
        int, typer.Option("--size", help="Values per party (the benchmark uses 1,000,000).")
    ] = 1_000_000,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed runs per protocol.")] = 3,
    frac_bits: Annotated[int, typer.Option("--frac-bits", help="Fractional bits.")] = 16,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON report.")] = Path(
        "bench-mpc.json"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Secure sum (additive and Shamir, 3 parties) of a million values against NumPy."""
    from veil.bench import run_mpc_benchmark  # noqa: PLC0415

    with progress_bar() as progress:
        result = run_mpc_benchmark(
            size=size, repeats=repeats, frac_bits=frac_bits, progress=progress
        )
    _finish(result, output, as_json=as_json)


@app.command()
def ledger(
    sizes: Annotated[
        str, typer.Option("--sizes", help="History sizes, comma-separated.")
    ] = "10,1000,100000",
    backends: Annotated[
        str, typer.Option("--backends", help="sqlite, postgresql (comma-separated).")
    ] = "sqlite,postgresql",
    charges: Annotated[int, typer.Option("--charges", help="Timed charges per run.")] = 200,
    processes: Annotated[
        str,
        typer.Option(
            "--processes",
            help="Concurrent chargers on PostgreSQL, comma-separated runs (0: none).",
        ),
    ] = "8",
    per_process: Annotated[
        int, typer.Option("--per-process", help="Charges by each concurrent process.")
    ] = 50,
    postgres_url: Annotated[
        str | None,
        typer.Option(
            "--postgres-url",
            help="Server to create a scratch database on (default VEIL_BENCH_POSTGRES_URL or "
            "postgresql://postgres@127.0.0.1:5432/postgres).",
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON report.")] = Path(
        "bench-ledger.json"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Charge latency and throughput of the privacy ledger against the size of its history."""
    from veil.bench import run_ledger_benchmark  # noqa: PLC0415

    try:
        size_list = [int(x.replace("_", "")) for x in sizes.split(",") if x.strip()]
    except ValueError:
        raise InvalidInputError(
            "--sizes must be whole numbers", expected="e.g. 10,1000,100000", got=sizes
        ) from None
    backend_list = [b.strip() for b in backends.split(",") if b.strip()]
    try:
        process_list = [int(x) for x in processes.split(",") if x.strip()]
    except ValueError:
        raise InvalidInputError(
            "--processes must be whole numbers", expected="e.g. 2,4,8", got=processes
        ) from None
    unknown = sorted(set(backend_list) - {"sqlite", "postgresql"})
    if unknown or not backend_list or not size_list or min(size_list) < 0 or charges < 1:
        raise InvalidInputError(
            "invalid ledger benchmark options",
            expected="--sizes N,... (>= 0), --backends sqlite,postgresql, --charges >= 1",
            got=f"sizes={sizes!r}, backends={backends!r}, charges={charges}",
        )
    with progress_bar() as progress:
        result = run_ledger_benchmark(
            sizes=size_list,
            backends=backend_list,
            charges=charges,
            processes=process_list,
            per_process=per_process,
            postgres_url=postgres_url,
            progress=progress,
        )
    _finish(result, output, as_json=as_json)


@app.command()
def trail(
    entries: Annotated[
        int, typer.Option("--entries", help="Entries of the trail that is verified and proved.")
    ] = 1_000_000,
    actions: Annotated[
        int, typer.Option("--actions", help="Timed actions with recording off, and as many on.")
    ] = 1_000,
    workers: Annotated[int, typer.Option("--workers", help="Concurrent recording processes.")] = 8,
    per_worker: Annotated[
        int, typer.Option("--per-worker", help="Actions recorded by each process.")
    ] = 500,
    grants: Annotated[
        int, typer.Option("--grants", help="Grants in force during the role checks.")
    ] = 10_000,
    checks: Annotated[int, typer.Option("--checks", help="Timed role checks.")] = 100_000,
    postgres_url: Annotated[
        str | None,
        typer.Option(
            "--postgres-url",
            help="Also run on this PostgreSQL server (a scratch database is created and "
            "dropped), e.g. postgresql://postgres@127.0.0.1:5432/postgres.",
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON report.")] = Path(
        "bench-trail.json"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """The trail's goals: recording overhead, verify speed, proofs, concurrency, role checks."""
    from veil.bench import run_trail_benchmark  # noqa: PLC0415

    with progress_bar() as progress:
        result = run_trail_benchmark(
            entries=entries,
            actions=actions,
            workers=workers,
            per_worker=per_worker,
            grants=grants,
            checks=checks,
            postgres_url=postgres_url,
            progress=progress,
        )
    _finish(result, output, as_json=as_json)


@app.command("he")
def he(
    data: DataOption = DEFAULT_DATA,
    models: Annotated[
        str, typer.Option("--models", help="Comma-separated: linear, mlp, cnn.")
    ] = "linear,mlp,cnn",
    single: Annotated[
        int | None,
        typer.Option("--single", help="Single-image runs per model (default 500; 20 for the CNN)."),
    ] = None,
    tiny: Annotated[
        bool,
        typer.Option(
            "--tiny", help="A smoke run: 2,000 training images, 1 epoch, 200 test images."
        ),
    ] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON report.")] = Path(
        "bench-he.json"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Encrypted MNIST inference (CKKS): accuracy, latency, sizes, against plaintext."""
    from veil.bench import run_he_benchmark  # noqa: PLC0415

    chosen = tuple(m.strip() for m in models.split(",") if m.strip())
    if not chosen or any(m not in ("linear", "mlp", "cnn") for m in chosen):
        raise InvalidInputError(
            "bad --models", expected="a comma-separated subset of linear, mlp, cnn", got=models
        )
    counts = dict.fromkeys(chosen, single) if single is not None else {}
    with progress_bar() as progress:
        result = run_he_benchmark(
            data,
            models=chosen,
            epochs=dict.fromkeys(("linear", "mlp", "cnn"), 1) if tiny else None,
            single=counts or ({"linear": 3, "mlp": 3, "cnn": 1} if tiny else None),
            batch_images=200 if tiny else None,
            train_images=2000 if tiny else None,
            progress=progress,
        )
    _finish(result, output, as_json=as_json)


@app.command("federated")
def federated(
    data: DataOption = DEFAULT_DATA,
    rows: Annotated[
        str | None,
        typer.Option(
            "--rows",
            help="Comma-separated: mlp-iid, secagg-overhead, cnn-iid, pathological, dp-fedavg, "
            "poisoning (default: all).",
        ),
    ] = None,
    max_rounds: Annotated[
        int, typer.Option("--max-rounds", help="Round limit of the pathological row.")
    ] = 300,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="A smoke run: 2,000 images, 2 rounds, logistic regression."),
    ] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON report.")] = Path(
        "bench-federated.json"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Federated learning: accuracy, SecAgg+ overhead, DP-FedAvg, robustness to poisoning."""
    from veil.bench import FEDERATED_ROWS, run_federated_benchmark  # noqa: PLC0415

    chosen = (
        FEDERATED_ROWS if rows is None else tuple(r.strip() for r in rows.split(",") if r.strip())
    )
    with progress_bar() as progress:
        result = run_federated_benchmark(
            data, rows=chosen, quick=quick, max_rounds=max_rounds, progress=progress
        )
    _finish(result, output, as_json=as_json)


@app.command("unlearning")
def unlearning(
    data: DataOption = DEFAULT_DATA,
    dataset: Annotated[str, typer.Option("--dataset", help="adult, mnist or both.")] = "both",
    shards: Annotated[
        int | None, typer.Option("--shards", help="SISA shards (default 20; tiny 4).")
    ] = None,
    slices: Annotated[
        int | None, typer.Option("--slices", help="Slices per shard (default 5; tiny 2).")
    ] = None,
    erase: Annotated[
        int | None,
        typer.Option("--erase", help="Persons unlearned for the LiRA test (default 100; tiny 20)."),
    ] = None,
    erase_rows: Annotated[
        int | None,
        typer.Option(
            "--erase-rows",
            help="Rows of the managed table erased from (default 1,000,000; 0: skip).",
        ),
    ] = None,
    references: Annotated[
        int | None, typer.Option("--references", help="Reference ensembles of LiRA (default 8).")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Epochs of a single model (default 10).")
    ] = None,
    tiny: Annotated[
        bool, typer.Option("--tiny", help="A smoke run: 1,200 rows, 4 x 2 shards, seconds.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="The benchmark's own choices.")] = 0,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON report.")] = Path(
        "bench-unlearning.json"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """SISA unlearning vs retraining, accuracy, LiRA before/after/retrained, and erase time."""
    from veil.bench import run_unlearning_benchmark  # noqa: PLC0415

    chosen = ("adult", "mnist") if dataset == "both" else (dataset,)
    with progress_bar() as progress:
        result = run_unlearning_benchmark(
            data=data,
            datasets=chosen,
            shards=shards,
            slices=slices,
            erase=erase,
            erase_rows=erase_rows,
            references=references,
            epochs=epochs,
            tiny=tiny,
            seed=seed,
            progress=progress,
        )
    _finish(result, output, as_json=as_json)


@app.command("serve")
def serve(
    data: DataOption = DEFAULT_DATA,
    parts: Annotated[
        str,
        typer.Option(
            "--parts",
            help="Comma-separated: overhead, consistency, extraction, monitor, membership, "
            "console (opt-in: builds a 1,000,000-entry trail first).",
        ),
    ] = "overhead,consistency,extraction,monitor,membership",
    quick: Annotated[
        bool, typer.Option("--quick", help="A smoke run: every part at a tiny size.")
    ] = False,
    seconds: Annotated[
        float | None,
        typer.Option("--seconds", help="Measured seconds of each open-loop run (default 30)."),
    ] = None,
    rate: Annotated[
        float | None, typer.Option("--rate", help="Requests/s of the open-loop runs (default 200).")
    ] = None,
    postgres_url: Annotated[
        str | None,
        typer.Option(
            "--postgres-url",
            help="Server to create a scratch database on (default VEIL_BENCH_POSTGRES_URL or "
            "postgresql://postgres@127.0.0.1:5432/postgres).",
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            help="Redis of the multi-worker part (default VEIL_BENCH_REDIS_URL or "
            "redis://127.0.0.1:6379/11).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="The attackers' own choices.")] = 0,
    ledger_events: Annotated[
        int | None,
        typer.Option("--ledger-events", help="console: ledger events (default 100,000)."),
    ] = None,
    trail_entries: Annotated[
        int | None,
        typer.Option("--trail-entries", help="console: trail entries (default 1,000,000)."),
    ] = None,
    page_repeats: Annotated[
        int | None,
        typer.Option("--page-repeats", help="console: timed requests per page (default 40)."),
    ] = None,
    reuse: Annotated[
        Path | None,
        typer.Option(
            "--reuse",
            help="console: build the workspace in this folder and keep it, or reuse the one "
            "an earlier run kept there.",
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON report.")] = Path(
        "bench-serve.json"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """The gateway (veil serve): overhead, shared budgets and limits, extraction, monitor, MIA."""
    from veil.bench import SERVE_PARTS, run_serve_benchmark  # noqa: PLC0415

    chosen = tuple(x.strip() for x in parts.split(",") if x.strip())
    if not chosen or any(x not in SERVE_PARTS for x in chosen):
        raise InvalidInputError(
            "bad --parts",
            expected="a comma-separated subset of " + ", ".join(SERVE_PARTS),
            got=parts,
        )
    overrides: dict[str, Any] = {
        k: v for k, v in (("seconds", seconds), ("rate", rate)) if v is not None
    }
    if any(v <= 0 for v in overrides.values()):
        raise InvalidInputError(
            "--seconds and --rate must be positive", expected="numbers > 0", got=str(overrides)
        )
    sizes = {"ledger_events": ledger_events, "trail_entries": trail_entries,
             "page_repeats": page_repeats}  # fmt: skip
    if any(v is not None and v < 1 for v in sizes.values()):
        raise InvalidInputError(
            "--ledger-events, --trail-entries and --page-repeats must be positive",
            expected="whole numbers >= 1", got=str(sizes),
        )  # fmt: skip
    overrides |= {k: v for k, v in sizes.items() if v is not None}
    if reuse is not None:
        overrides["console_reuse"] = str(reuse)
    with progress_bar() as progress:
        result = run_serve_benchmark(
            data,
            parts=chosen,
            quick=quick,
            postgres_url=postgres_url,
            redis_url=redis_url,
            overrides=overrides,
            seed=seed,
            progress=progress,
        )
    _finish(result, output, as_json=as_json)


@app.command("synth")
def synth(
    data: DataOption = DEFAULT_DATA,
    epsilons: Annotated[
        str, typer.Option("--epsilons", help="Comma-separated budgets (delta 1e-9).")
    ] = "1,10",
    rows: Annotated[
        int | None, typer.Option("--rows", help="Only the first ROWS rows of adult.data.")
    ] = None,
    test_rows: Annotated[
        int | None, typer.Option("--test-rows", help="Only the first rows of adult.test.")
    ] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", help="AIM rounds (both AIMs).")] = None,
    max_model_mb: Annotated[
        float | None, typer.Option("--max-model-mb", help="AIM's largest model in MB (both).")
    ] = None,
    iters: Annotated[
        int | None,
        typer.Option(
            "--iters", help="Mirror-descent iterations per fit (both; default: veil synth's own)."
        ),
    ] = None,
    final_iters: Annotated[
        int | None,
        typer.Option(
            "--final-iters", help="Iterations of Veil's last fit (default: veil synth's own)."
        ),
    ] = None,
    generators: Annotated[
        str,
        typer.Option(
            "--generators",
            help="Comma-separated: veil-aim, reference-aim, veil-mst, veil-aim-nonprivate.",
        ),
    ] = "veil-aim,reference-aim,veil-mst,veil-aim-nonprivate",
    columns: Annotated[
        str | None, typer.Option("--columns", help="Only these Adult columns (income among them).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of sampling and evaluation.")] = 0,
    time_limit: Annotated[
        float,
        typer.Option(
            "--time-limit",
            help=(
                "Stop a generator after this many minutes (wall) and report it as timed out "
                "(the reference AIM may not finish on the whole table)."
            ),
        ),
    ] = SYNTH_TIME_LIMIT_MIN,
    tiny: Annotated[
        bool,
        typer.Option("--tiny", help="A smoke run: 4 columns, 300 rows, 5 rounds, 50 iterations."),
    ] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON report.")] = Path(
        "bench-synth.json"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Veil's AIM and MST on UCI Adult beside private-pgm's AIM: CPU, memory, TVD, TSTR, MIA."""
    from veil.bench import SYNTH_TINY as TINY  # noqa: PLC0415
    from veil.bench import SYNTH_TINY_COLUMNS as TINY_COLUMNS  # noqa: PLC0415
    from veil.bench import run_synth_benchmark  # noqa: PLC0415

    try:
        budgets = tuple(float(e) for e in epsilons.split(",") if e.strip())
    except ValueError:
        raise InvalidInputError(
            "bad --epsilons", expected="comma-separated numbers, e.g. 1,10", got=epsilons
        ) from None
    if not math.isfinite(time_limit) or time_limit <= 0:
        raise InvalidInputError(
            "--time-limit must be a positive number of minutes",
            expected="minutes > 0, e.g. --time-limit 30",
            got=f"{time_limit:g}",
        )
    defaults = TINY if tiny else {"rounds": 16, "max_model_mb": 1.0}
    with progress_bar() as progress:
        result = run_synth_benchmark(
            data,
            epsilons=budgets,
            rows=rows if rows is not None or not tiny else int(TINY["rows"]),
            test_rows=test_rows if test_rows is not None or not tiny else int(TINY["test_rows"]),
            rounds=rounds if rounds is not None else int(defaults["rounds"]),
            max_model_mb=max_model_mb if max_model_mb is not None else defaults["max_model_mb"],
            iters=iters if iters is not None else (int(TINY["iters"]) if tiny else None),
            final_iters=(
                final_iters
                if final_iters is not None
                else (int(TINY["final_iters"]) if tiny else None)
            ),
            columns=(
                tuple(c.strip() for c in columns.split(",") if c.strip())
                if columns is not None
                else (TINY_COLUMNS if tiny else None)
            ),
            generators=tuple(g.strip() for g in generators.split(",") if g.strip()),
            seed=seed,
            time_limit_s=60.0 * time_limit,
            progress=progress,
        )
    _finish(result, output, as_json=as_json)
