"""The FastAPI gateway for protected and encrypted inference and DP queries.

Empty until the issue that builds it lands; the package exists so the layout of
DESIGN.md holds from the first commit.
"""

__all__: list[str] = []
