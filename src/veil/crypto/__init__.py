"""Homomorphic-encryption inference, secret sharing and MPC, Paillier and encryption at rest (issue: computing on encrypted data).

Empty until the issue that builds it lands; the package exists so the layout of
DESIGN.md holds from the first commit.
"""

__all__: list[str] = []
