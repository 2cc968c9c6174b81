"""Differential privacy on data: mechanisms, local DP, and DP queries on frames (Polars or Spark).

Noise comes only from OpenDP's samplers; every mechanism carries the
:class:`~veil.ledger.Mechanism` the ledger charges.

>>> from veil.dp import LaplaceMechanism
>>> LaplaceMechanism(epsilon=0.5, sensitivity=1.0).scale
2.0
"""

from veil.dp._engine import Exact
from veil.dp._execute import NoiseSource, aggregate, release
from veil.dp._frame import PrivateFrame, query_dataset
from veil.dp._mechanisms import (
    AboveThreshold,
    FrequencyEstimate,
    FrequencyOracle,
    GaussianMechanism,
    LaplaceMechanism,
    RandomizedResponse,
    exponential_mechanism,
    exponential_selection,
    gaussian_sigma,
    laplace_half_width,
)
from veil.dp._noise import gaussian_noise
from veil.dp._plan import QueryPlan, plan_query
from veil.dp._spark import spark_session
from veil.dp._spec import (
    Aggregate,
    AggregateKind,
    Contribution,
    NoiseMechanism,
    QueryResult,
    QuerySpec,
)
from veil.dp._sql import SUPPORTED_SQL, parse_sql

__all__ = [
    "SUPPORTED_SQL",
    "AboveThreshold",
    "Aggregate",
    "AggregateKind",
    "Contribution",
    "Exact",
    "FrequencyEstimate",
    "FrequencyOracle",
    "GaussianMechanism",
    "LaplaceMechanism",
    "NoiseMechanism",
    "NoiseSource",
    "PrivateFrame",
    "QueryPlan",
    "QueryResult",
    "QuerySpec",
    "RandomizedResponse",
    "aggregate",
    "exponential_mechanism",
    "exponential_selection",
    "gaussian_noise",
    "gaussian_sigma",
    "laplace_half_width",
    "parse_sql",
    "plan_query",
    "query_dataset",
    "release",
    "spark_session",
]
