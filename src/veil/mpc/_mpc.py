"""Secure multi-party computation on localhost: one OS process per party, TCP between them.

One machine, one OS user, one runner that reads every input: a single trust
domain that runs and measures the real protocols, not privacy between
organisations (that needs a host per party and authenticated, encrypted links).

:func:`run_parties` writes each party's input to its own file, starts one
``python -m veil.mpc._party`` process per party (and a dealer process for
products), hands each process only the path of its own input, and collects the
opened result with the timings and the bytes each node sent. The convenience
functions :func:`secure_sum`, :func:`secure_mean`, :func:`secure_dot` and
:func:`secure_multiply` call it.

Protocols (see :mod:`veil.mpc._sharing` and :mod:`veil.mpc._party`):
additive n-of-n sharing over Z_2^64, or Shamir t-of-n over GF(2^61 - 1);
fixed-point reals; products with Beaver triples from a dealer (the
trusted-third-party model of CrypTen's ``TTP`` provider). Semi-honest parties,
no collusion between the dealer and any party. Secure comparison is not
offered: doing it properly needs bit decomposition with shared random bits,
which this module does not implement.

Why not MPyC. MPyC (``mpyc`` 0.11 on PyPI) is a maintained MPC framework and
was the first candidate. It does not fit this job: its secure types are Shamir
shares over prime fields with BGW-style multiplication and PRSS, so there is
no additive sharing over Z_2^64 and no dealer-supplied Beaver triples; its
default threshold is the honest-majority ``t = (m - 1) // 2``, which is 0 (no
secrecy) for two parties; its share generation and recombination run element
by element in pure Python (``mpyc/thresha.py``: ``random_split`` draws every
coefficient with ``secrets.randbelow`` in a Python loop, ``recombine`` loops
over every share and element), which is slow for a million values; and its
runtime owns the process (``mpc.run``, its own ``-M``/``-I`` command-line
options and asyncio loop), while Veil needs a library call that returns a
result, names a dropped party within a timeout, and counts bytes per party.
The protocols here are small (sharing, one agreement round, Beaver, opening),
vectorised with NumPy, and tested against the plaintext result. (Checked by
reading MPyC's source; it was not installed in this environment.)
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError, NotFoundError, PartyDroppedError
from veil.mpc._checks import (
    OPERATIONS,
    PROTOCOLS,
    InputLike,
    Operation,
    Protocol,
    as_array,
    check_ranges,
    validate,
)
from veil.mpc._processes import finish, launch, raise_from
from veil.mpc._result import MpcResult
from veil.mpc._sharing import FixedPoint
from veil.progress import ProgressCallback, ProgressEvent

__all__ = [
    "OPERATIONS",
    "PROTOCOLS",
    "PartyDroppedError",
    "run_parties",
    "secure_dot",
    "secure_mean",
    "secure_multiply",
    "secure_sum",
]


def _spec(
    value: InputLike, party: int, stem: str, folder: Path, column: str | None
) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, Path):
        if not value.is_file():  # the party reads the file; the runner only checks it is there
            raise NotFoundError(
                f"party {party}'s input file {value} does not exist",
                expected="one existing file per party",
                got=f"no file at {value}",
                fix="check the paths of the input files",
            )
        return {"path": str(value.resolve()), "column": column}
    path = folder / f"{stem}-{party}.npy"
    np.save(path, np.asarray(value, dtype=np.float64))
    path.chmod(0o600)
    return {"path": str(path)}


def run_parties(  # noqa: C901, PLR0912, PLR0915 - one linear pipeline: check, launch, collect
    operation: Operation,
    inputs: Sequence[InputLike],
    *,
    second: Sequence[InputLike] | None = None,
    column: str | None = None,
    second_column: str | None = None,
    protocol: Protocol = "additive",
    threshold: int | None = None,
    frac_bits: int = 16,
    elementwise: bool = False,
    timeout: float = 30.0,
    progress: ProgressCallback | None = None,
    _crash: dict[int, str] | None = None,
    _linger: dict[int, str] | None = None,
    _hook: Callable[[dict[int, int | None], dict[str, int]], None] | None = None,
) -> MpcResult:
    """Run one secure computation with one OS process per party on 127.0.0.1.

    Args:
        operation: ``sum`` (of all values, or element-wise), ``mean`` (of all
            values, weighted by ``second`` when given; element-wise: the mean
            of the parties' vectors), ``dot`` (``sum_k X_k Y_k``) or ``mul``
            (``X * Y`` element-wise), where ``X = sum_i x_i`` and ``Y = sum_i
            y_i`` over the parties' contributions ``inputs`` and ``second``.
        inputs: One entry per party: an array, a ``Path`` to a CSV file (with
            ``column``) or a ``.npy`` file, or ``None`` (a party that holds no
            ``x``, for ``dot``/``mul``). Each party's process gets only its own.
        second: The parties' weights (``mean``) or ``y`` (``dot``/``mul``).
        column: The CSV column of ``inputs``.
        second_column: The CSV column of ``second``.
        protocol: ``additive`` (n-of-n over Z_2^64) or ``shamir`` (t-of-n over
            GF(2^61 - 1)).
        threshold: Shamir's t (default: a majority, ``n // 2 + 1``).
        frac_bits: Fractional bits of the fixed-point encoding (0 for integers).
        elementwise: For ``sum``/``mean``: combine the parties' vectors
            element by element instead of over all values.
        timeout: Seconds any one node may stay silent before it counts as
            dropped out.
        progress: Progress callback.
        _crash: Tests only: ``{party: phase}`` makes that party's process kill
            itself (SIGKILL) at ``start``, after ``input`` or after ``agree``.
        _linger: Tests only: ``{party: tag}`` makes that party, once it has sent
            its ``tag`` frames (``open``, say), wait until every other party's
            links have ended before it gathers theirs: the slow party of a race.
        _hook: Tests only: called with every node's port and process id once
            they all listen and before they connect (an attack test connects
            to a port from here; a check reads a process's environment).

    Raises:
        InvalidInputError: Bad parameters or inputs (before any process starts
            when the arrays are given here).
        PartyDroppedError: Too few parties left (any dropout for additive).
    """
    n = len(inputs)
    t = validate(operation, n, protocol, threshold, timeout)
    fixed = FixedPoint(frac_bits, "field" if protocol == "shamir" else "ring")
    pairs = operation in ("dot", "mul") or (operation == "mean" and second is not None)
    if operation in ("dot", "mul") and second is None:
        raise InvalidInputError(
            f"{operation} needs two operands",
            expected="inputs (x) and second (y), one entry per party",
            got="no second operand",
            fix="pass second=[...] with each party's y (None where it holds none)",
        )
    seconds_in: list[InputLike] = list(second) if second is not None else [None] * n
    if len(seconds_in) != n:
        raise InvalidInputError(
            "one second operand per party is needed",
            expected=f"{n} entries",
            got=f"{len(seconds_in)}",
            fix="pass as many weights / y entries as inputs",
        )
    arrays = [
        None if isinstance(v, Path) or v is None else as_array(v, f"party {i}'s values")
        for i, v in enumerate(inputs)
    ]
    others = [
        None if isinstance(v, Path) or v is None else as_array(v, f"party {i}'s second operand")
        for i, v in enumerate(seconds_in)
    ]
    sizes = {a.size for a in [*arrays, *others] if a is not None}
    if (elementwise or operation in ("dot", "mul")) and len(sizes) > 1:
        raise InvalidInputError(
            "the parties' vectors differ in length",
            expected="one length for every party's vector",
            got=f"lengths {sorted(sizes)}",
            fix="pad or align the vectors (zeros where a party holds nothing)",
        )
    if all(v is None for v in inputs) and operation not in ("dot", "mul"):
        raise InvalidInputError(
            "no party holds any values",
            expected="at least one input",
            got="None for every party",
            fix="pass each party's values",
        )
    if operation == "mean" and elementwise and any(v is None for v in inputs):
        raise InvalidInputError(
            "an element-wise mean needs a vector from every party",
            expected="no None input (the mean divides by the number of parties)",
            got=f"None for part{'ies' if sum(v is None for v in inputs) > 1 else 'y'} "
            f"{[i for i, v in enumerate(inputs) if v is None]}",
            fix="give every party its vector, or use secure_sum",
        )
    check_ranges(operation, arrays, others if pairs else [None] * n, fixed, elementwise=elementwise)
    length = next(iter(sizes)) if sizes else 0
    dealer = n if operation in ("dot", "mul") else None
    token = secrets.token_hex(16)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="veil-mpc-") as folder_name:
        folder = Path(folder_name)
        folder.chmod(0o700)
        jobs: list[dict[str, Any]] = [
            {
                "role": "party",
                "id": i,
                "parties": n,
                "protocol": protocol,
                "threshold": t,
                "op": operation,
                "frac_bits": frac_bits,
                "elementwise": elementwise or operation == "mul",
                "length": length,
                "input": _spec(inputs[i], i, "x", folder, column),
                "second": _spec(seconds_in[i], i, "y", folder, second_column),
                "output": str(folder / f"result-{i}.npy"),
                "token": token,
                "timeout": timeout,
                "dealer": dealer,
                "crash_after": (_crash or {}).get(i),
                "linger": (_linger or {}).get(i),
            }
            for i in range(n)
        ]
        if dealer is not None:
            jobs.append(
                {
                    **jobs[0],
                    "role": "dealer",
                    "id": dealer,
                    "input": None,
                    "second": None,
                    "crash_after": None,
                    "linger": None,
                }
            )
        names = [str(i) for i in range(n)] + (["dealer"] if dealer is not None else [])
        if progress is not None:
            progress(
                ProgressEvent(f"mpc {operation}", 0, 3, "steps", f"starting {len(names)} processes")
            )
        nodes = [launch(name) for name in names]
        try:
            for node, job in zip(nodes, jobs, strict=True):
                node.write(json.dumps(job))
            deadline = time.monotonic() + timeout
            ports: dict[int, int | None] = {}
            for index, node in enumerate(nodes):
                line = node.next_line(deadline)
                ports[index] = int(line.split()[1]) if line and line.startswith("PORT ") else None
                if line and line.startswith("ERROR "):
                    node.last = line
            if _hook is not None:
                _hook(ports, {node.name: node.process.pid for node in nodes})
            if progress is not None:
                progress(ProgressEvent(f"mpc {operation}", 1, 3, "steps", "computing"))
            for node in nodes:
                node.write(json.dumps(ports))
        finally:
            last = finish(nodes, time.monotonic() + 4 * timeout + 30)
        seconds = time.perf_counter() - started
        reports: dict[int, dict[str, Any]] = {}
        errors: dict[int, dict[str, Any]] = {}
        dropped: dict[int, str] = {}
        bytes_sent: dict[str, int] = {}
        refused: dict[str, list[str]] = {}
        peak_memory: dict[str, int] = {}
        for index, name in enumerate(names):
            line = last[name]
            if line.startswith("RESULT "):
                report = json.loads(line[7:])
                bytes_sent[name] = int(report["bytes_sent"])
                peak_memory[name] = int(report["peak_memory_bytes"])
                if report["refused"]:
                    refused[name] = list(report["refused"])
                if name != "dealer":
                    reports[index] = report
            elif line.startswith("ERROR "):
                errors[index] = json.loads(line[6:])
                if errors[index].get("details", {}).get("refused"):
                    refused[name] = list(errors[index]["details"]["refused"])
            elif index < n:
                dropped[index] = "process died" + (
                    f": {line[6:]}" if line.startswith("CRASH") else ""
                )
        input_errors = [e for e in errors.values() if e.get("class") != "DropoutError"]
        if input_errors:
            raise_from(input_errors[0], refused)
        if not reports:
            if errors:
                body = errors[min(errors)]
                details = body.setdefault("details", {})
                details["dropped"] = sorted(set(details.get("dropped", [])) | set(dropped))
                raise_from(body, refused)
            raise PartyDroppedError(
                "every party dropped out",
                expected=f"at least {t} of {n} parties finishing",
                got=f"none ({dropped})",
                fix="check that Python can start `python -m veil.mpc._party` here",
                details={"refused": refused} if refused else {},
            )
        if errors:  # some finished, some gave up: the finished ones are the result
            dropped.update(
                {i: "gave up: " + str(e.get("message")) for i, e in errors.items() if i < n}
            )
        first = reports[min(reports)]
        if any(
            r["sha256"] != first["sha256"] or r["contributors"] != first["contributors"]
            for r in reports.values()
        ):
            raise PartyDroppedError(
                "the surviving parties disagree on the result",
                expected="one result from every party that finished",
                got=f"{len({r['sha256'] for r in reports.values()})} different results",
                fix="rerun the computation; a party dropped out half-way through a round",
                details={"refused": refused} if refused else {},
            )
        value: float | npt.NDArray[np.float64]
        value = np.load(first["output"]) if "output" in first else float(first["value"])
    if progress is not None:
        progress(ProgressEvent(f"mpc {operation}", 3, 3, "steps", "done"))
    phases: dict[str, float] = {}
    for report in reports.values():
        for phase, spent in report["seconds"].items():
            phases[phase] = max(phases.get(phase, 0.0), float(spent))
    return MpcResult(
        value=value,
        operation=operation,
        protocol=protocol,
        parties=n,
        threshold=t,
        contributors=tuple(first["contributors"]),
        dropped=dropped,
        frac_bits=frac_bits,
        resolution=fixed.resolution,
        seconds=seconds,
        protocol_seconds=max(float(r["protocol_seconds"]) for r in reports.values()),
        bytes_sent=bytes_sent,
        count=first.get("count"),
        phases=phases,
        refused=refused,
        peak_memory=peak_memory,
    )


def secure_sum(
    values_per_party: Sequence[InputLike],
    *,
    protocol: Protocol = "additive",
    threshold: int | None = None,
    frac_bits: int = 16,
    elementwise: bool = False,
    timeout: float = 30.0,
    progress: ProgressCallback | None = None,
) -> MpcResult:
    """The sum of every party's values (element-wise with ``elementwise=True``), nobody's revealed.

    >>> secure_sum([[1.5, 2.0], [3.25], [-1.0]]).value
    5.75
    """
    return run_parties(
        "sum",
        values_per_party,
        protocol=protocol,
        threshold=threshold,
        frac_bits=frac_bits,
        elementwise=elementwise,
        timeout=timeout,
        progress=progress,
    )


def secure_mean(
    values_per_party: Sequence[InputLike],
    weights_per_party: Sequence[InputLike] | None = None,
    *,
    protocol: Protocol = "additive",
    threshold: int | None = None,
    frac_bits: int = 16,
    timeout: float = 30.0,
    progress: ProgressCallback | None = None,
) -> MpcResult:
    """The (weighted) mean of all parties' values; reveals only the total and the count (or weight)."""
    return run_parties(
        "mean",
        values_per_party,
        second=weights_per_party,
        protocol=protocol,
        threshold=threshold,
        frac_bits=frac_bits,
        timeout=timeout,
        progress=progress,
    )


def secure_dot(
    x_per_party: Sequence[InputLike],
    y_per_party: Sequence[InputLike],
    *,
    protocol: Protocol = "additive",
    threshold: int | None = None,
    frac_bits: int = 16,
    timeout: float = 30.0,
    progress: ProgressCallback | None = None,
) -> MpcResult:
    """``sum_k X_k Y_k`` with ``X``, ``Y`` the sums of the parties' contributions (Beaver triples)."""
    return run_parties(
        "dot",
        x_per_party,
        second=y_per_party,
        protocol=protocol,
        threshold=threshold,
        frac_bits=frac_bits,
        timeout=timeout,
        progress=progress,
    )


def secure_multiply(
    x_per_party: Sequence[InputLike],
    y_per_party: Sequence[InputLike],
    *,
    protocol: Protocol = "additive",
    threshold: int | None = None,
    frac_bits: int = 16,
    timeout: float = 30.0,
    progress: ProgressCallback | None = None,
) -> MpcResult:
    """``X * Y`` element-wise, with ``X``, ``Y`` the sums of the parties' contributions (Beaver)."""
    return run_parties(
        "mul",
        x_per_party,
        second=y_per_party,
        protocol=protocol,
        threshold=threshold,
        frac_bits=frac_bits,
        timeout=timeout,
        progress=progress,
    )
