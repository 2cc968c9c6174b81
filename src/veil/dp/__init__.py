"""Differential-privacy mechanisms, DP queries on data frames, local DP and DP synthetic data (issue: the privacy ledger and DP analytics).

Empty until the issue that builds it lands; the package exists so the layout of
DESIGN.md holds from the first commit.
"""

__all__: list[str] = []
