"""The benchmarks behind `veil bench NAME`, each writing JSON and a readable table.

Empty until the issue that builds it lands; the package exists so the layout of
DESIGN.md holds from the first commit.
"""

__all__: list[str] = []
