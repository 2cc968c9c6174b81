"""DP-SGD training on Opacus, private tabular models and machine unlearning (issue: DP model training).

Empty until the issue that builds it lands; the package exists so the layout of
DESIGN.md holds from the first commit.
"""

__all__: list[str] = []
