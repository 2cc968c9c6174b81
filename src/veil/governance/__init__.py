"""The hash-chained access trail, consent, retention and erasure requests.

Empty until the issue that builds it lands; the package exists so the layout of
DESIGN.md holds from the first commit.
"""

__all__: list[str] = []
