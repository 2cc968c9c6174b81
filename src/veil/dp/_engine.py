"""What a query engine computes for a charged plan, and the arithmetic every engine shares.

A query runs in three steps. The *engine* (Polars in ``_execute``, Spark in
``_spark``) filters the rows, bounds each person's contribution, clamps and
aggregates, and hands the driver only the aggregated groups
(:class:`Exact`). The *release* (``_execute.release``, one function for every
engine) adds the noise, selects partitions and builds the intervals, on the
driver. So an engine never sees a noise sampler, and two engines that return
the same :class:`Exact` release the same values for the same noise.

Two choices make the engines agree exactly, not just approximately:

* **Sums in fixed point.** Each clamped, centred value ``c`` (``|c| <= half``)
  is truncated to a multiple of ``2**-k`` (``k`` from the declared bounds only,
  so that ``|c| * 2**k < 2**43``) and summed as integers: 128-bit on Polars;
  on Spark, whose integers are 64-bit (and overflow raises), as two 22-bit
  limbs that the driver joins. The sums are exact whatever the order of
  addition (a float sum depends on it, and an engine that splits the rows into
  partitions adds in another order); the driver rounds once. The
  truncation moves each value towards 0 by less than ``2**-k`` (a relative
  ``2**-43`` of the bound), a per-row map that keeps every value inside the
  bounds, so the sensitivity is unchanged. Limb sums over ``MAX_ROWS`` (2**40)
  rows stay below 2**62.
* **A portable hash for contribution bounding.** Which rows of a person are
  kept is decided by XXH64 (seed 42) of the salt, the person, the group and
  the row's position among that person's rows, joined as text: Spark's
  ``xxhash64`` of one string column is exactly that function, and Polars gets
  it from the ``polars-hash`` plugin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from veil.dp._plan import MAX_ROWS, QueryPlan, declared_bounds, quantile_grid
from veil.errors import SchemaError

__all__ = [
    "HASH_SEED",
    "KEY_SEPARATOR",
    "LIMB_BITS",
    "NULL_TOKEN",
    "Exact",
    "FixedPoint",
    "check_needed_columns",
    "fixed_points",
    "measured_columns",
    "quantile_columns",
    "quantile_mids",
]

LIMB_BITS = 22
"""Each fixed-point value is ``high * 2**22 + low`` with ``0 <= low < 2**22``."""
_VALUE_BITS = 43  # |t| < 2**43: high fits in 21 bits and a sign
HASH_SEED = 42  # Spark's xxhash64 seed; polars-hash is given the same
KEY_SEPARATOR = "\x1f"  # ASCII unit separator between the hashed fields
NULL_TOKEN = "\x00"  # noqa: S105 - a missing key, as text

assert MAX_ROWS * 2**LIMB_BITS < 2**63  # noqa: S101 - the limb sums cannot overflow int64


@dataclass(frozen=True)
class FixedPoint:
    """How one measured column's clamped, centred values (and squares) become integers."""

    column: str
    lo: float
    hi: float
    shift: int  # c is summed as trunc(c * 2**shift)
    shift_sq: int  # c * c as trunc(c * c * 2**shift_sq)

    @property
    def mid(self) -> float:
        return (self.lo + self.hi) / 2

    @property
    def scale(self) -> float:
        return math.ldexp(1.0, self.shift)

    @property
    def scale_sq(self) -> float:
        return math.ldexp(1.0, self.shift_sq)

    def null_units(self) -> tuple[int, int]:
        """The integers a missing value becomes: engines clamp a missing value to ``lo``.

        Computed with the same float operations the engines use, so the driver
        can take exactly what the missing values added back out of the sums.
        """
        c = self.lo - self.mid
        return int(c * self.scale), int((c * c) * self.scale_sq)


def _shift_for(bound: float) -> int:
    """The largest k with ``bound * 2**k < 2**43`` (bound >= 0)."""
    if bound <= 0 or not math.isfinite(bound):
        return _VALUE_BITS - 1 if bound <= 0 else 0
    _, exponent = math.frexp(bound)  # bound < 2**exponent
    return _VALUE_BITS - exponent


def check_needed_columns(plan: QueryPlan, available: list[str]) -> None:
    """Refuse a frame without a column the plan reads (before anything is computed)."""
    spec, schema = plan.spec, plan.schema
    needed = set(spec.group_by) | {c.column for c in plan.components if c.column}
    if schema.privacy_unit:
        needed.add(schema.privacy_unit)
    missing = sorted(needed - set(available))
    if missing:
        raise SchemaError(
            "the frame lacks columns the query needs",
            expected=str(sorted(needed)),
            got=f"missing {missing}",
        )


def measured_columns(plan: QueryPlan) -> list[str]:
    """Columns summed (SUM, AVG, VARIANCE), sorted."""
    return sorted({c.column for c in plan.components if c.column and c.kind != "quantile"})


def quantile_columns(plan: QueryPlan) -> list[str]:
    """Columns a quantile is taken of, sorted."""
    return sorted({c.column for c in plan.components if c.column and c.kind == "quantile"})


def fixed_points(plan: QueryPlan) -> dict[str, FixedPoint]:
    """One :class:`FixedPoint` per summed column, from its declared bounds only."""
    out = {}
    for column in measured_columns(plan):
        lo, hi = declared_bounds(plan.schema, column, "sum")
        half = (hi - lo) / 2
        out[column] = FixedPoint(column, lo, hi, _shift_for(half), _shift_for(half * half))
    return out


def quantile_mids(plan: QueryPlan, column: str) -> list[float]:
    """The midpoints between a quantile's grid candidates: a value rounds to candidate
    ``k`` = the number of midpoints ``<=`` it."""
    lo, hi = declared_bounds(plan.schema, column, "a quantile")
    grid, _ = quantile_grid(lo, hi)
    return [float(v) for v in grid[:-1] / 2 + grid[1:] / 2]


@dataclass
class Exact:
    """An engine's aggregates of the bounded, clamped rows: all the driver ever receives.

    ``groups`` has the group columns and, per group: ``__n`` (rows),
    ``__nn_C`` (missing values of C), ``__t_C`` (the 128-bit integer sum of C's
    fixed-point centred values), ``__s_C`` (of their squares).
    ``histograms[C]`` has the group columns, ``__k`` (the grid candidate a
    value rounds to) and ``__hn`` (how many values round to it).
    """

    groups: pl.DataFrame
    histograms: dict[str, pl.DataFrame] = field(default_factory=dict)
    engine: str = "polars"
    details: dict[str, Any] = field(default_factory=dict)
