"""An empirical DP audit of a COUNT computed on Spark, with contribution bounding.

The Spark engine computes the exact, bounded aggregate; the driver adds
OpenDP's noise (:func:`veil.dp._execute.release`). What Spark contributes to
privacy is the bounding: the noise is calibrated to ``max_rows`` rows per
person, so the audit checks that the counts Spark returns for neighbouring
datasets (one person more, with more rows than ``max_rows``) differ by no
more than that. Spark runs once per dataset (the added person's rows are
identical, so which of them bounding keeps does not change the count); the
noise is drawn ``RUNS`` times per dataset with the product's default sampler.

Statistics follow STYLE.md (tests/_dpstats.py): Clopper-Pearson bounds at
``ALPHA`` = 1e-6. The test fails wrongly with probability <= 5 * ALPHA.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from tests._dpstats import audit_power_floor, epsilon_lower_bound

from veil.data import ColumnSpec, PrivacySchema
from veil.dp import Contribution, parse_sql, plan_query
from veil.dp._execute import aggregate, release

# One worker runs every in-process Spark test (`--dist loadgroup`): one JVM for the suite.
pytestmark = pytest.mark.xdist_group("spark")

ALPHA = 1e-6
EPSILON = 1.0
MAX_ROWS = 2
RUNS = 4_000
PEOPLE = 30

SCHEMA = PrivacySchema(
    columns=(ColumnSpec("pid", "identifier"), ColumnSpec("x", "numeric", bounds=(0.0, 10.0))),
    privacy_unit="pid",
    max_groups=1,
    max_rows=MAX_ROWS,
)


def _plan(max_rows: int):
    return plan_query(
        parse_sql("SELECT COUNT(*) FROM t"),
        SCHEMA,
        epsilon=EPSILON,
        contribution=Contribution(max_groups=1, max_rows=max_rows),
    )


def _p_at_least(k: int, scale: float) -> float:
    """P(Z >= k) for OpenDP's discrete Laplace noise of ``scale``."""
    a = math.exp(-1.0 / scale)
    return a**k / (1 + a) if k >= 1 else 1 - a ** (1 - k) / (1 + a)


def _hits(plan, exact, threshold: int) -> int:
    """How many of RUNS releases of ``exact`` (OpenDP noise) show a count >= ``threshold``."""
    return sum(release(plan, exact).rows[0]["count"]["value"] >= threshold for _ in range(RUNS))


@pytest.mark.slow  # statistical (false-failure rate <= 5e-6); 3 x 4,000 releases
def test_spark_count_with_bounding_is_as_private_as_claimed_and_the_audit_can_fail(spark):
    """COUNT on Spark with max_rows=2 at epsilon 1, audited on neighbours D0, D1.

    D0: 30 people with one row each. D1: D0 and one person with 6 rows, of
    whom bounding keeps 2. Discrete Laplace noise of scale 2 (sensitivity 2).

    * The audit of event {count >= 32}: P1/P0 = e^1 exactly, so the empirical
      bound stays <= 1 (wrong with probability <= ALPHA) and reaches the
      power floor of a mechanism exactly as noisy as claimed (wrong with
      probability <= 2 ALPHA).
    * The audit catches a doubled contribution: counting D1 with max_rows=4
      (4 of the person's rows; the noise still for 2) gives event
      {count >= 34} a log-ratio of 2; the design asserts the audit reaches
      more than epsilon there with probability >= 1 - 2 ALPHA, and it must.

    Type I error of the whole test <= 5 ALPHA = 5e-6.
    """
    plan = _plan(MAX_ROWS)
    (count,) = plan.components
    assert (count.kind, count.scale, count.integer) == ("count", MAX_ROWS / EPSILON, True)

    d0 = pl.DataFrame({"pid": list(range(PEOPLE)), "x": [5.0] * PEOPLE})
    d1 = pl.concat([d0, pl.DataFrame({"pid": [999] * 6, "x": [5.0] * 6})])
    s0, s1 = spark.createDataFrame(d0.to_arrow()), spark.createDataFrame(d1.to_arrow())
    # The product's salt (fresh each run): the person's rows are alike, so the count is not random.
    exact0, exact1 = aggregate(plan, s0), aggregate(plan, s1)
    doubled = aggregate(_plan(2 * MAX_ROWS), s1)
    assert exact0.engine == exact1.engine == doubled.engine == "spark"
    counts = [int(e.groups.get_column("__n")[0]) for e in (exact0, exact1, doubled)]
    assert counts == [PEOPLE, PEOPLE + MAX_ROWS, PEOPLE + 2 * MAX_ROWS]
    assert d1.height > counts[1]  # bounding dropped rows

    # The honest audit.
    k0, k1 = _hits(plan, exact0, PEOPLE + 2), _hits(plan, exact1, PEOPLE + 2)
    bound = epsilon_lower_bound(k0, RUNS, k1, RUNS, ALPHA)
    assert bound <= EPSILON, (
        f"privacy leak: count >= 32 in {k1}/{RUNS} runs on D1 against {k0}/{RUNS} on D0 "
        f"proves epsilon >= {bound:.3f} > {EPSILON}; type I error <= {ALPHA}"
    )
    p0, p1 = _p_at_least(2, count.scale), _p_at_least(0, count.scale)
    assert math.log(p1 / p0) == pytest.approx(EPSILON)  # the event is the worst case
    floor = audit_power_floor(p0, RUNS, p1, RUNS, ALPHA)
    assert bound >= floor, (
        f"noisier than claimed: bound {bound:.3f} < {floor:.3f}, reached with probability "
        f">= 1 - {2 * ALPHA} by a mechanism as noisy as claimed"
    )

    # The audit can fail: a doubled contribution, released with the claimed noise.
    threshold = PEOPLE + 4
    p0_wrong, p1_wrong = _p_at_least(4, count.scale), _p_at_least(0, count.scale)
    design = audit_power_floor(p0_wrong, RUNS, p1_wrong, RUNS, ALPHA)
    assert design > EPSILON, f"design: {RUNS} runs cannot catch a doubled contribution"
    h0, h1 = _hits(plan, exact0, threshold), _hits(plan, doubled, threshold)
    caught = epsilon_lower_bound(h0, RUNS, h1, RUNS, ALPHA)
    assert caught > EPSILON, (
        f"no power: with max_rows doubled the bound is only {caught:.3f} <= {EPSILON} "
        f"({h1}/{RUNS} against {h0}/{RUNS}); type I error <= {2 * ALPHA}"
    )
    assert np.isfinite(caught)
