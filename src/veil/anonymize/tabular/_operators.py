"""Column operators: masking, rank swapping, noise, micro-aggregation, keyed pseudonyms, date shifting.

These perturb or replace values rather than generalise them. None of them is
differential privacy: their protection is measured (``veil scan`` on the
output), not proven, and the documentation says so.

Randomness: rank swapping draws partners from a generator seeded by the
operating system's secure source (a reproducible seed is accepted for
tests; a released seed lets anyone undo the swaps), and noise comes from
OpenDP's Gaussian sampler. Pseudonyms and date shifts are not random at all:
they are HMAC-SHA256 of the value under a workspace key, so the same person
gets the same pseudonym and the same shift in every table and every run,
and nobody without the key can recompute or reverse them.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd

from veil._validate import whole_number
from veil.errors import InvalidInputError

if TYPE_CHECKING:
    from opendp.mod import Measurement

# OpenDP loads in _gaussian, its only user: importing
# veil.anonymize (veil redact, veil scan) does not pay for it.

__all__ = [
    "add_noise",
    "mask",
    "microaggregate",
    "pseudonymize",
    "rank_swap",
    "shift_dates",
]


def _generator(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(secrets.randbits(128) if seed is None else seed)


def _numeric(values: pd.Series, operator: str) -> npt.NDArray[np.float64]:
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any():
        raise InvalidInputError(
            f"{operator} needs a numeric column without missing values",
            expected=f"numbers in {values.name!r}",
            got=f"{int(numbers.isna().sum())} missing or non-numeric value(s)",
            fix="clean or impute the column first",
        )
    return numbers.to_numpy(dtype=np.float64)


def mask(values: pd.Series, *, keep_last: int = 4, char: str = "*") -> pd.Series:
    """Replace all but the last ``keep_last`` characters of each value by ``char``."""
    if keep_last < 0 or len(char) != 1:
        raise InvalidInputError(
            "invalid masking",
            expected="keep_last >= 0 and a one-character mask",
            got=f"keep_last={keep_last}, char={char!r}",
            fix="for example keep_last=4, char='*'",
        )
    text = values.astype("string")

    def one(v: str) -> str:
        kept = v[-keep_last:] if keep_last else ""
        return char * (len(v) - len(kept)) + kept

    return text.map(one, na_action="ignore").astype("string")


def rank_swap(values: pd.Series, *, p: float = 0.05, seed: int | None = None) -> pd.Series:
    """Swap each value with another whose rank is at most ``p`` of the records away (Moore, 1996).

    The column's distribution is kept exactly (a permutation of the values);
    the link between a value and the rest of its record is broken for
    partners within the window.
    """
    if not 0 < p <= 1:
        raise InvalidInputError(
            "the rank-swapping window must be a share in (0, 1]",
            expected="0 < p <= 1",
            got=str(p),
            fix="for example p=0.05",
        )
    x = _numeric(values, "rank swapping")
    n = x.size
    order = np.argsort(x, kind="stable")
    window = max(1, int(p * n))
    rng = _generator(seed)
    swapped = np.zeros(n, dtype=bool)
    out = x.copy()
    for i in range(n):
        if swapped[i]:
            continue
        hi = min(n, i + window + 1)
        free = np.flatnonzero(~swapped[i + 1 : hi]) + i + 1
        if free.size == 0:
            continue
        j = int(rng.choice(free))
        a, b = order[i], order[j]
        out[a], out[b] = x[b], x[a]
        swapped[i] = swapped[j] = True
    return pd.Series(out, index=values.index, name=values.name).astype(values.dtype)


@functools.lru_cache(maxsize=64)
def _gaussian(sigma: float) -> Measurement:
    from opendp import domains, measurements, metrics, mod  # noqa: PLC0415

    mod.enable_features("contrib")
    atom = domains.atom_domain(T=float, nan=False)
    return measurements.make_gaussian(
        domains.vector_domain(atom), metrics.l2_distance(T=float), sigma
    )


def add_noise(values: pd.Series, *, relative_sd: float = 0.1) -> pd.Series:
    """Add Gaussian noise of standard deviation ``relative_sd`` times the column's.

    This is statistical disclosure control (Brand, 2002), not differential
    privacy: the noise scale is set from the data's own spread.
    """
    if relative_sd <= 0:
        raise InvalidInputError(
            "the noise level must be positive",
            expected="relative_sd > 0",
            got=str(relative_sd),
            fix="for example relative_sd=0.1",
        )
    x = _numeric(values, "noise addition")
    sd = float(x.std())
    if sd == 0 or x.size == 0:
        return values.copy()
    noisy = np.asarray(_gaussian(relative_sd * sd)(x.tolist()), dtype=np.float64)
    return pd.Series(noisy, index=values.index, name=values.name)


def microaggregate(frame: pd.DataFrame, columns: Sequence[str], *, k: int) -> pd.DataFrame:
    """Replace numeric columns by group means over groups of at least ``k`` records (MDAV).

    Maximum distance to average vector (Domingo-Ferrer and Torra, 2005), on
    standardised columns: repeatedly take the record farthest from the
    centroid of what remains and the record farthest from it, and group each
    with its ``k - 1`` nearest neighbours.
    """
    if k < 2 or k > len(frame):  # noqa: PLR2004 - a group of one protects nothing
        raise InvalidInputError(
            "micro-aggregation needs 2 <= k <= records",
            expected=f"2 <= k <= {len(frame)}",
            got=str(k),
            fix="choose another k",
        )
    x = np.column_stack([_numeric(frame[c], "micro-aggregation") for c in columns])
    spread = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    remaining = np.arange(len(z))
    group = np.full(len(z), -1, dtype=np.int64)
    g = 0

    def take_nearest(anchor: int, pool: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        d = np.sum((z[pool] - z[anchor]) ** 2, axis=1)
        return pool[np.argpartition(d, k - 1)[:k]]

    while remaining.size >= 3 * k:
        centroid = z[remaining].mean(axis=0)
        r = remaining[np.argmax(np.sum((z[remaining] - centroid) ** 2, axis=1))]
        s = remaining[np.argmax(np.sum((z[remaining] - z[r]) ** 2, axis=1))]
        for anchor in (r, s):
            members = take_nearest(anchor, remaining)
            group[members] = g
            g += 1
            remaining = np.setdiff1d(remaining, members, assume_unique=True)
    if remaining.size >= 2 * k:
        centroid = z[remaining].mean(axis=0)
        r = remaining[np.argmax(np.sum((z[remaining] - centroid) ** 2, axis=1))]
        members = take_nearest(r, remaining)
        group[members] = g
        g += 1
        remaining = np.setdiff1d(remaining, members, assume_unique=True)
    group[remaining] = g
    out = frame.copy()
    for j, c in enumerate(columns):
        means = pd.Series(x[:, j]).groupby(group).transform("mean").to_numpy()
        out[c] = means
    return out


def _mac(key: bytes, purpose: str, value: str) -> bytes:
    if len(key) < 16:  # noqa: PLR2004 - 128 bits at least
        raise InvalidInputError(
            "the key is too short",
            expected="a key of at least 16 bytes (the workspace key store makes 32)",
            got=f"{len(key)} bytes",
            fix="use veil.vault.KeyStore.for_workspace().get(NAME)",
        )
    return hmac.new(key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()


def pseudonymize(values: pd.Series, key: bytes, *, prefix: str = "", length: int = 16) -> pd.Series:
    """Replace each value by a keyed pseudonym: ``prefix`` + the first ``length`` hex digits of HMAC-SHA256.

    Equal values get equal pseudonyms (joins still work); without the key
    nobody can recompute a pseudonym from a guessed value, which a plain hash
    would allow. 16 hex digits (64 bits) make collisions negligible below
    about a hundred million distinct values.
    """
    if not 8 <= length <= 64:  # noqa: PLR2004
        raise InvalidInputError(
            "invalid pseudonym length",
            expected="8 to 64 hex digits",
            got=str(length),
            fix="for example length=16",
        )
    text = values.astype("string")
    cache: dict[str, str] = {}

    def one(v: str) -> str:
        found = cache.get(v)
        if found is None:
            found = prefix + _mac(key, "pseudonym", v).hex()[:length]
            cache[v] = found
        return found

    return text.map(one, na_action="ignore").astype("string")


def shift_dates(
    dates: pd.Series, person: pd.Series, key: bytes, *, max_days: int = 180
) -> pd.Series:
    """Shift every date of a person by the same keyed offset of 1 to ``max_days`` days, either way.

    Intervals between one person's events are kept exactly (what clinical
    analyses need); the calendar dates, which link to outside records, are not.
    """
    max_days = whole_number(
        max_days,
        "max_days",
        message="the largest shift must be at least one day",
        expected="max_days >= 1",
        fix="for example max_days=180",
    )
    parsed = pd.to_datetime(dates, errors="coerce")
    bad = parsed.isna() & dates.notna()
    if bad.any():
        raise InvalidInputError(
            "date shifting needs dates",
            expected=f"dates in {dates.name!r}",
            got=f"{int(bad.sum())} value(s) that are not dates, e.g. {dates[bad].iloc[0]!r}",
            fix="clean the column first",
        )
    ids = person.astype("string")
    offsets: dict[str, int] = {}

    def offset(p: str) -> int:
        found = offsets.get(p)
        if found is None:
            draw = int.from_bytes(_mac(key, "date-shift", p)[:8], "big")
            magnitude = 1 + draw % max_days
            found = magnitude if (draw >> 63) & 1 else -magnitude
            offsets[p] = found
        return found

    days = ids.map(offset, na_action="ignore").astype("Float64").fillna(0).to_numpy(dtype=np.int64)
    return parsed + pd.to_timedelta(days, unit="D")
