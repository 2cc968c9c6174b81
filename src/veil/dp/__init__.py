"""Differential privacy on data: mechanisms, local DP, and DP queries on frames.

Noise comes only from OpenDP's samplers; every mechanism carries the
:class:`~veil.ledger.Mechanism` the ledger charges.

>>> from veil.dp import LaplaceMechanism
>>> LaplaceMechanism(epsilon=0.5, sensitivity=1.0).scale
2.0
"""

from veil.dp._mechanisms import (
    AboveThreshold,
    FrequencyEstimate,
    FrequencyOracle,
    GaussianMechanism,
    LaplaceMechanism,
    RandomizedResponse,
    exponential_mechanism,
    gaussian_sigma,
    laplace_half_width,
)

__all__ = [
    "AboveThreshold",
    "FrequencyEstimate",
    "FrequencyOracle",
    "GaussianMechanism",
    "LaplaceMechanism",
    "RandomizedResponse",
    "exponential_mechanism",
    "gaussian_sigma",
    "laplace_half_width",
]
