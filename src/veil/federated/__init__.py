"""Federated learning on Flower with secure aggregation, user-level DP and robust aggregation (issue: federated learning).

Empty until the issue that builds it lands; the package exists so the layout of
DESIGN.md holds from the first commit.
"""

__all__: list[str] = []
