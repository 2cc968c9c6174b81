"""Persons by keyed token: how Veil names a data subject outside the data itself.

Consent records, erasure records and the membership lists of models name a
person by ``HMAC-SHA256(key, "<dataset id>\\x1f<identifier>")`` (hex, 32
characters: 128 bits), never by the identifier itself. The key is the
workspace's named key ``persons`` (:class:`veil.vault.KeyStore`), so a copy of
the database or of a model folder alone does not list who is in the data, and
after an erasure the records that remain name nobody without the key. The
dataset id is bound in, so the same identifier in two datasets (two hospitals'
patient numbers) gives two tokens.

An identifier is canonicalised before hashing so that the same person read
back from CSV, Parquet or a consent file gives the same token: integers and
integral floats as decimal integers (``7``, ``7.0`` and ``"7"`` agree), other
values as their ``str`` with surrounding whitespace removed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from veil.errors import InvalidInputError
from veil.vault import KeyStore
from veil.workspace import Workspace

__all__ = ["PERSONS_KEY", "canonical_person", "person_key", "person_token", "person_tokens"]

PERSONS_KEY = "persons"
TOKEN_CHARS = 32


def person_key(workspace: Workspace) -> bytes:
    """The workspace's key for person tokens (made on first use; ``VEIL_KEY_PERSONS`` overrides)."""
    return KeyStore.for_workspace(workspace).get(PERSONS_KEY)


def canonical_person(value: Any) -> str:
    """The identifier as hashed: ``7``, ``7.0``, ``np.int64(7)`` and ``" 7 "`` are all ``"7"``.

    Raises:
        InvalidInputError: A missing identifier (None, NaN) or an empty one.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise InvalidInputError(
            "a person identifier is missing",
            expected="a non-empty identifier",
            got=repr(value),
            fix="every row needs its privacy-unit value",
        )
    if isinstance(value, bool | np.bool_):
        text = str(bool(value))
    elif isinstance(value, int | np.integer) or (
        isinstance(value, float | np.floating) and float(value).is_integer()
    ):
        text = str(int(value))
    else:
        text = str(value).strip()
        try:  # "7.0" in a consent file names the same person as 7 in the data
            number = float(text)
        except ValueError:
            pass
        else:
            if number.is_integer() and abs(number) < 2**63:
                text = str(int(number))
    if not text:
        raise InvalidInputError(
            "a person identifier is empty",
            expected="a non-empty identifier",
            got=repr(value),
            fix="every row needs its privacy-unit value",
        )
    return text


def person_token(key: bytes, dataset_id: int, value: Any) -> str:
    """The token of one person of dataset ``dataset_id``."""
    message = f"{dataset_id}\x1f{canonical_person(value)}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:TOKEN_CHARS]


def person_tokens(key: bytes, dataset_id: int, values: Iterable[Any] | pd.Series) -> list[str]:
    """The tokens of many identifiers, in order (one HMAC each; about 1 s per million)."""
    prefix = f"{dataset_id}\x1f".encode()
    base = hmac.new(key, prefix, hashlib.sha256)
    if isinstance(values, pd.Series):
        values = values.tolist()
    cache: dict[Any, str] = {}
    out: list[str] = []
    for value in values:
        token = cache.get(value) if type(value) in (str, int) else None
        if token is None:
            mac = base.copy()
            mac.update(canonical_person(value).encode())
            token = mac.hexdigest()[:TOKEN_CHARS]
            if type(value) in (str, int):  # not bool: True == 1 would share a slot
                cache[value] = token
        out.append(token)
    return out
