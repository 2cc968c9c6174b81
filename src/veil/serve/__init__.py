"""The privacy gateway: DP analytics, protected and encrypted inference over HTTP.

:func:`create_app` builds the FastAPI application of one worker for a
:class:`ServeConfig`; ``veil serve`` runs it under uvicorn. ``docs/serve.md``
has the endpoints, the policy file, a curl walk-through, a Python client and
the threat model.
"""

from veil.serve._app import configure_logging, create_app
from veil.serve._config import CONFIG_ENV, REDIS_ENV, ServeConfig
from veil.serve._defences import shape
from veil.serve._limits import check_rate
from veil.serve._policy import ServePolicy
from veil.serve._served import ModelCache

__all__ = [
    "CONFIG_ENV",
    "REDIS_ENV",
    "ModelCache",
    "ServeConfig",
    "ServePolicy",
    "check_rate",
    "configure_logging",
    "create_app",
    "shape",
]
