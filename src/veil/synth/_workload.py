"""Workloads (the marginals a release should preserve) and the error of a release on them.

A workload is a list of cliques (tuples of columns). ``3-way`` (the default)
means every 3-way marginal of at most ``max_cells`` cells, as in the AIM
paper's benchmarks; ``2-way`` and ``1-way`` likewise; a file lists cliques,
one per line (``age,sex,income``) or as a JSON list of lists. Workload error
is the average total-variation distance between the real and the synthetic
marginal, each normalised to sum to one.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from veil.errors import InvalidInputError

__all__ = [
    "DEFAULT_MAX_CELLS",
    "MAX_DOMAIN_CELLS",
    "marginal",
    "marginal_tvd",
    "workload_cliques",
    "workload_tvd",
]

DEFAULT_MAX_CELLS = 10_000
# The largest marginal any workload may name: its noisy measurement is held in memory as float64
# (8 MB at this size), and a graphical model over it must be too.
MAX_DOMAIN_CELLS = 1_000_000
_NAMED = {"1-way": 1, "2-way": 2, "3-way": 3}


def workload_cliques(
    sizes: Mapping[str, int], spec: str | Path = "3-way", *, max_cells: int = DEFAULT_MAX_CELLS
) -> list[tuple[str, ...]]:
    """The cliques of ``spec`` over columns with ``sizes`` cells each.

    Named workloads keep only the marginals of at most ``max_cells`` cells; a
    clique listed in a file that is larger than :data:`MAX_DOMAIN_CELLS` is
    refused (a named one is simply left out).
    """
    if isinstance(max_cells, bool) or not isinstance(max_cells, int) or max_cells < 1:
        raise InvalidInputError(
            "the workload's cell limit must be a positive whole number",
            expected="max_cells >= 1",
            got=repr(max_cells),
        )
    columns = list(sizes)
    name = str(spec)
    if name in _NAMED:
        way = min(_NAMED[name], len(columns))
        cliques = [
            c
            for c in itertools.combinations(columns, way)
            if math.prod(sizes[x] for x in c) <= min(max_cells, MAX_DOMAIN_CELLS)
        ]
        if not cliques:
            raise InvalidInputError(
                f"no {name} marginal has at most {max_cells:,} cells",
                expected=f"some {name} marginals within the cell limit",
                got=f"column sizes {dict(sizes)}",
                fix="raise --max-cells, use fewer --bins, or a smaller workload (2-way)",
            )
        return cliques
    return _from_file(Path(spec), sizes)


def _from_file(path: Path, sizes: Mapping[str, int]) -> list[tuple[str, ...]]:
    if not path.is_file():
        raise InvalidInputError(
            "the workload is neither a named workload nor a readable file",
            expected="3-way, 2-way, 1-way, or a file of cliques (one per line: a,b,c)",
            got=str(path),
        )
    text = path.read_text(encoding="utf-8")
    try:
        loaded = json.loads(text)
        rows = [list(map(str, r)) for r in loaded]
    except (json.JSONDecodeError, TypeError):
        rows = [
            [c.strip() for c in line.split(",") if c.strip()]
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    cliques: list[tuple[str, ...]] = []
    for row in rows:
        unknown = [c for c in row if c not in sizes]
        if unknown or not row or len(set(row)) != len(row):
            raise InvalidInputError(
                f"workload file {path.name}: a clique names unknown or repeated columns",
                expected=f"distinct columns among {list(sizes)}",
                got=repr(row),
            )
        cells = math.prod(sizes[c] for c in row)
        if cells > MAX_DOMAIN_CELLS:
            raise InvalidInputError(
                f"workload file {path.name}: the marginal {','.join(row)} is too large",
                expected=f"at most {MAX_DOMAIN_CELLS:,} cells per marginal",
                got=f"{cells:,} cells",
                fix="use fewer --bins, or split the clique into smaller ones",
            )
        clique = tuple(row)
        if clique not in cliques:
            cliques.append(clique)
    if not cliques:
        raise InvalidInputError(
            f"workload file {path.name} lists no cliques",
            expected="one clique per line, e.g. age,sex,income",
            got="nothing",
        )
    return cliques


def marginal(codes: np.ndarray, index: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Counts of every cell of the marginal over columns ``index`` (flattened, C order)."""
    if len(index) == 0:
        return np.array([float(codes.shape[0])])
    flat = np.ravel_multi_index(tuple(codes[:, i] for i in index), tuple(shape))
    return np.bincount(flat, minlength=math.prod(shape)).astype(np.float64)


def workload_tvd(
    real: pd.DataFrame,
    synth: pd.DataFrame,
    cliques: Sequence[Sequence[str]],
    sizes: Mapping[str, int],
) -> float:
    """Average total-variation distance between real and synthetic marginals over ``cliques``.

    Both frames hold cell codes (:meth:`~veil.synth.Encoder.encode`). Each
    marginal is normalised to a distribution; TVD is half its L1 distance.
    """
    if not cliques:
        raise InvalidInputError("an empty workload has no error", expected=">= 1 clique", got="0")
    if len(real) == 0 or len(synth) == 0:
        raise InvalidInputError(
            "workload error needs rows on both sides",
            expected="non-empty real and synthetic frames",
            got=f"{len(real)} real, {len(synth)} synthetic rows",
        )
    return sum(marginal_tvd(real, synth, cliques, sizes)) / len(cliques)


def marginal_tvd(
    real: pd.DataFrame,
    synth: pd.DataFrame,
    cliques: Sequence[Sequence[str]],
    sizes: Mapping[str, int],
) -> list[float]:
    """Total-variation distance between the normalised marginals of each clique (cell codes)."""
    columns = list(sizes)
    real_codes = real[columns].to_numpy(dtype=np.int64)
    synth_codes = synth[columns].to_numpy(dtype=np.int64)
    out = []
    for clique in cliques:
        index = [columns.index(c) for c in clique]
        shape = [sizes[c] for c in clique]
        p = marginal(real_codes, index, shape)
        q = marginal(synth_codes, index, shape)
        out.append(0.5 * float(np.abs(p / max(p.sum(), 1.0) - q / max(q.sum(), 1.0)).sum()))
    return out
