"""The exceptions Veil raises, rooted in one base, :class:`VeilError`.

Every error carries a stable ``code`` (a short string documented in
``docs/errors.md`` and used in the service's error bodies) and an
``exit_code`` (what the ``veil`` command returns). Each also derives from the
builtin a caller would naturally catch, so ``except ValueError`` still works::

    Exception
     └── VeilError                              code            exit
          ├── InvalidInputError (ValueError)     invalid_input     3
          │    ├── SchemaError                   schema_error      4
          │    └── DataTooLargeError             data_too_large    5
          ├── NotFoundError (LookupError)        not_found         6
          ├── ConflictError                      conflict          7
          ├── BudgetExceededError (PermissionError)
          │                                      budget_exceeded   8
          ├── PermissionDeniedError (PermissionError)
          │                                      permission_denied 9
          ├── MissingDependencyError (ImportError)
          │                                      missing_dependency 10
          ├── StoreError                         store_error      11
          │    └── StoreVersionError             store_version    12
          ├── PartyDroppedError (ConnectionError)
          │                                      party_dropped    13
          ├── DeploymentError (RuntimeError)     deployment_failed 14
          ├── UnauthenticatedError (PermissionError)
          │                                      unauthenticated  15
          ├── RateLimitedError                   rate_limited     16
          ├── UnavailableError (ConnectionError) unavailable      17
          ├── UnsupportedMediaTypeError (InvalidInputError)
          │                                      unsupported_media_type 18
          └── EngineError (RuntimeError)         engine_failed    19

Exit code 1 is reserved for an unexpected error (a bug), 2 for a malformed
command line (Click's usage errors) and 130 for an interrupt.

Messages follow one shape: what was expected, what arrived, and how to fix
it. Build an error with those three parts and ``str(error)`` is the
one-paragraph message the CLI prints::

    raise InvalidInputError(
        "epsilon must be positive",
        expected="a number > 0",
        got="-1.0",
        fix="pass a positive number such as --epsilon 1.0",
    )
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BudgetExceededError",
    "ConflictError",
    "DataTooLargeError",
    "DeploymentError",
    "EngineError",
    "InvalidInputError",
    "MissingDependencyError",
    "NotFoundError",
    "PartyDroppedError",
    "PermissionDeniedError",
    "PrivacyLeakWarning",
    "RateLimitedError",
    "SchemaError",
    "StoreError",
    "StoreVersionError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnsupportedMediaTypeError",
    "VeilError",
    "require",
]


def _sentence(text: str) -> str:
    """``text`` ending in one full stop (a question or exclamation keeps its own mark)."""
    text = text.rstrip()
    return text if text.endswith(("?", "!")) else text.rstrip(".") + "."


class VeilError(Exception):
    """Base of every error Veil raises on purpose.

    Args:
        message: What went wrong, as one sentence.
        expected: What Veil expected.
        got: What it received instead.
        fix: How the user can put it right.
        details: Extra machine-readable facts (JSON-serialisable).
    """

    code: ClassVar[str] = "veil_error"
    exit_code: ClassVar[int] = 1

    def __init__(
        self,
        message: str,
        *,
        expected: str | None = None,
        got: str | None = None,
        fix: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.message = message
        self.expected = expected
        self.got = got
        self.fix = fix
        self.details = dict(details or {})
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [_sentence(self.message)]
        if self.expected is not None:
            parts.append(_sentence(f"Expected {self.expected}"))
        if self.got is not None:
            parts.append(_sentence(f"Got {self.got}"))
        if self.fix is not None:
            parts.append(_sentence(f"Fix: {self.fix}"))
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The error as the JSON body the CLI (``--json``) and the service return."""
        return {
            "code": self.code,
            "message": self.message,
            "expected": self.expected,
            "got": self.got,
            "fix": self.fix,
            "details": self.details,
        }


class InvalidInputError(VeilError, ValueError):
    """An argument, option or file content is not acceptable."""

    code = "invalid_input"
    exit_code = 3


class SchemaError(InvalidInputError):
    """A privacy schema is inconsistent with itself or with the data."""

    code = "schema_error"
    exit_code = 4


class DataTooLargeError(InvalidInputError):
    """Data would not fit in memory; it is refused before anything is loaded."""

    code = "data_too_large"
    exit_code = 5


class NotFoundError(VeilError, LookupError):
    """A file, dataset, workspace or other named thing does not exist."""

    code = "not_found"
    exit_code = 6


class ConflictError(VeilError):
    """The thing to create already exists."""

    code = "conflict"
    exit_code = 7


class BudgetExceededError(VeilError, PermissionError):
    """A release would spend more privacy budget than the dataset has left."""

    code = "budget_exceeded"
    exit_code = 8


class PermissionDeniedError(VeilError, PermissionError):
    """The caller's role does not allow this action."""

    code = "permission_denied"
    exit_code = 9


class MissingDependencyError(VeilError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install``."""

    code = "missing_dependency"
    exit_code = 10


class StoreError(VeilError):
    """The workspace database cannot be reached or used."""

    code = "store_error"
    exit_code = 11


class StoreVersionError(StoreError):
    """The database schema is older or newer than this version of Veil expects."""

    code = "store_version"
    exit_code = 12


class PartyDroppedError(VeilError, ConnectionError):
    """Too few parties of a multi-party computation were left to finish.

    The message names the parties that dropped out. With additive sharing
    every party is needed; with Shamir t-of-n, at least t.
    """

    code = "party_dropped"
    exit_code = 13


class DeploymentError(VeilError, RuntimeError):
    """A Flower process (SuperLink, SuperNode) failed to start or died, or a submitted run failed.

    The message carries the tail of the process's log.
    """

    code = "deployment_failed"
    exit_code = 14


class UnauthenticatedError(VeilError, PermissionError):
    """A request to the service carried no service key, or one that is malformed, unknown,
    revoked or expired (HTTP 401). A known key without the role an action needs is a
    :class:`PermissionDeniedError` (HTTP 403)."""

    code = "unauthenticated"
    exit_code = 15


class RateLimitedError(VeilError):
    """A service key sent more requests than its rate limit allows (HTTP 429).

    ``details["retry_after"]`` is the number of seconds until the next request
    may succeed.
    """

    code = "rate_limited"
    exit_code = 16


class UnavailableError(VeilError, ConnectionError):
    """Something the service needs to answer safely is down: the database that holds the
    ledger and the trail, or the Redis server that holds shared limits (HTTP 503). The
    service refuses rather than answer without accounting or limits."""

    code = "unavailable"
    exit_code = 17


class UnsupportedMediaTypeError(InvalidInputError):
    """A request body in a content type the endpoint does not take (HTTP 415)."""

    code = "unsupported_media_type"
    exit_code = 18


class EngineError(VeilError, RuntimeError):
    """A query engine other than the built-in one (Spark) could not start, or failed while
    computing. A failure after the charge releases nothing, and the charge stands: the
    engine may have computed on the rows."""

    code = "engine_failed"
    exit_code = 19


class PrivacyLeakWarning(UserWarning):
    """Warns that a choice leaks information about individuals.

    Raised, for example, when bounds or categories are read from the data
    instead of being declared: the bounds themselves then depend on the
    extreme records and are not differentially private.
    """


def require(module: str, *, extra: str, purpose: str) -> Any:
    """Import an optional dependency, or explain exactly how to install it.

    Args:
        module: The importable module name, for example ``"torch"``.
        extra: The Veil extra that provides it, for example ``"train"``.
        purpose: What the caller wanted to do, for the message.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: When ``module`` cannot be imported.
    """
    import importlib  # noqa: PLC0415 - imported only where optional modules are needed

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the optional package '{module}', which is not installed",
            expected=f"'{module}' importable (it comes with the '{extra}' extra)",
            got=f"ImportError: {exc}",
            fix=f"run: pip install 'veil[{extra}]'",
            details={"module": module, "extra": extra},
        ) from exc
