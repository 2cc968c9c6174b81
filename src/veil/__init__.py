"""Veil: machine learning on sensitive data.

The package is organised by capability (see ``docs/`` and DESIGN.md): ``veil.data``
for datasets and their privacy schema, ``veil.store`` for the workspace
database, ``veil.errors`` for the exception tree. The top level re-exports only
the handful of names almost every user needs.
"""

from veil.errors import VeilError
from veil.workspace import Workspace

__version__ = "0.1.0"

__all__ = ["VeilError", "Workspace", "__version__"]
