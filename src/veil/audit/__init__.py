"""Attacks on Veil's own outputs (membership, attribute, inversion, extraction), empirical DP auditing and the audit report (issue: privacy audit).

Empty until the issue that builds it lands; the package exists so the layout of
DESIGN.md holds from the first commit.
"""

__all__: list[str] = []
