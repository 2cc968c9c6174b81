"""The environment that Veil hands to the processes it starts.

A child process (an MPC party, a Flower SuperLink or SuperNode, the Flower apps those
start in turn) must not inherit ``os.environ`` whole: the operator's shell may hold
``VEIL_VAULT_PASSPHRASE``, ``VEIL_KEY_<NAME>``, a ``VEIL_DATABASE_URL`` with a password or a
cloud token, and a Flower SuperNode runs app code that a remote coordinator chose.
:func:`child_environment` therefore starts from nothing and copies only names on an
allow-list: what locates programs and libraries, the locale and time zone, temporary
folders, the thread counts of numerical libraries, and settings this machine needs for
OpenBLAS. Anything else a child needs is passed explicitly through ``extra``, where a
reviewer sees it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["ALLOWED_NAMES", "ALLOWED_PREFIXES", "child_environment"]

#: Variables copied from the parent when set.
ALLOWED_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "TMPDIR",
        "TEMP",
        "TMP",
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "PYTHONHASHSEED",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "PYTHONIOENCODING",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "SYSTEMROOT",  # Windows needs it to start any process
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "OPENBLAS_CORETYPE",
        "OPENBLAS_L2_SIZE",
        "NUMEXPR_NUM_THREADS",
        "TOKENIZERS_PARALLELISM",
        "COVERAGE_PROCESS_START",
    }
)
#: Prefixes of variables copied from the parent (the locale's categories).
ALLOWED_PREFIXES = ("LC_",)


def child_environment(
    extra: Mapping[str, str] | None = None, *, parent: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The allow-listed environment for a child process.

    Args:
        extra: Variables the child needs, set after the allow-listed copy (they win).
        parent: The environment to copy from; ``os.environ`` by default.

    Returns:
        A new dictionary: the allow-listed names present in ``parent``, then ``extra``.
        No ``VEIL_*`` variable passes unless ``extra`` names it.
    """
    source = os.environ if parent is None else parent
    env = {
        name: value
        for name, value in source.items()
        if name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES)
    }
    if extra:
        env.update(extra)
    return env
