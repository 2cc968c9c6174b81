"""The privacy ledger: privacy events, accountants and the durable per-dataset budget (issue: the privacy ledger).

Empty until the issue that builds it lands; the package exists so the layout of
DESIGN.md holds from the first commit.
"""

__all__: list[str] = []
