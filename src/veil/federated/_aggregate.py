"""Robust aggregation rules over a stacked matrix of client updates, and checks on one update.

Every rule takes ``updates``, an ``(n_clients, dim)`` float array (each row one
client's flattened model update), and most take ``weights``, the ``(n,)``
positive example counts. They are vectorised: pairwise distances come from
the Gram matrix of the centred rows (one BLAS call) and order statistics from
:func:`numpy.partition`, so 100 clients x 100 000 coordinates aggregate in a
small fraction of a second.

* :func:`weighted_mean`: FedAvg's average, weighted by example counts. One
  client can move it anywhere.
* :func:`krum` / :func:`multikrum` (Blanchard et al. 2017, "Machine learning
  with adversaries: Byzantine tolerant gradient descent", NeurIPS): each
  update's score is the sum of squared distances to its ``n - f - 2`` nearest
  other updates; Krum returns the update with the lowest score, Multi-Krum the
  weighted mean of the ``m`` lowest. Needs ``2 f + 2 < n`` (the paper's
  condition), i.e. ``n >= 2 f + 3``.
* :func:`bulyan` (El Mhamdi et al. 2018, "The hidden vulnerability of
  distributed learning in Byzantium", ICML): select ``theta = n - 2 f``
  updates by repeated Krum (each pick removed from the pool), then average,
  coordinate by coordinate, the ``beta = theta - 2 f`` selected values closest
  to the coordinate's median. Needs ``n >= 4 f + 3``.
* :func:`coordinate_median` and :func:`trimmed_mean` (Yin et al. 2018,
  "Byzantine-robust distributed learning: towards optimal statistical
  rates", ICML): per coordinate, the median, or the mean after dropping the
  ``floor(beta n)`` largest and smallest values.
* :func:`norm_bound` (Sun et al. 2019, "Can you really backdoor federated
  learning?"): scale every update to L2 norm at most ``bound``, which blunts
  boosted (model-replacement) updates.
* :func:`validate_update`: why an update must be rejected (NaN / inf, wrong
  shape or dtype), or ``None``; the server logs the reason and drops the client.

The rules are deterministic and unweighted where the papers are: Krum's
selection, Bulyan and the coordinate-wise rules ignore ``weights`` (a client
could inflate its example count at will, so robust rules must not trust it).

**Against Flower** (``flwr.server.strategy.aggregate``), checked in the tests
on random inputs: ``weighted_mean``, ``krum``, ``multikrum``, ``bulyan``,
``coordinate_median`` and ``trimmed_mean`` return what ``aggregate``,
``aggregate_krum``, ``aggregate_bulyan`` (with Krum), ``aggregate_median`` and
``aggregate_trimmed_avg`` return, to rounding. The differences:

* Flower's ``aggregate_krum`` accepts any ``n`` and silently uses
  ``max(1, n - f - 2)`` neighbours when ``n < 2 f + 3``, where Krum's
  guarantee does not hold; here that raises :class:`~veil.errors.InvalidInputError`.
* Multi-Krum, here and in Flower, averages the ``m`` selected updates weighted
  by example counts; Blanchard et al. average them unweighted. They agree when
  the counts are equal.
* Bulyan's repeated Krum runs on a shrinking pool, which eventually holds
  fewer than ``2 f + 3`` updates; the paper does not say how many neighbours
  to score there. Like Flower, the pool ``R`` uses ``max(1, |R| - f - 2)``
  (at most ``|R| - 1``).
* Flower's ``aggregate_bulyan`` removes the selected entries from the list it
  is given (a side effect on the caller's data); nothing here modifies its input.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from veil._validate import whole_number
from veil.errors import InvalidInputError

__all__ = [
    "bulyan",
    "coordinate_median",
    "krum",
    "krum_scores",
    "multikrum",
    "norm_bound",
    "trimmed_mean",
    "validate_update",
    "weighted_mean",
]

# Bulyan's coordinate-wise step works on blocks of this many matrix entries at a time.
_BLOCK_ENTRIES = 1 << 22


# ----------------------------------------------------------------------------- validation


def check_whole(value: object, name: str, *, minimum: int = 0) -> int:
    """``value`` as an int, refused unless it is a whole number >= ``minimum``.

    A value of the wrong type and an integer below ``minimum`` keep their two messages.
    """
    integer = not isinstance(value, bool) and isinstance(value, numbers.Integral)
    return whole_number(
        value,
        name,
        minimum=minimum,
        message=f"{name} out of range" if integer else f"{name} must be a whole number",
        expected=f"{name} >= {minimum}" if integer else f"an integer >= {minimum}",
        fix=f"pass a whole number >= {minimum} for {name}",
        numpy=True,
    )


def _positive(value: object, name: str) -> float:
    """A finite number > 0 (veil.ledger has the same check; importing it pulls in dp_accounting)."""
    fix = f"pass a positive finite {name}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInputError(
            f"{name} must be a number", expected="a number > 0", got=repr(value), fix=fix
        )
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise InvalidInputError(
            f"{name} must be positive and finite", expected="a number > 0", got=repr(value), fix=fix
        )
    return number


def _updates(updates: object) -> np.ndarray:
    """``updates`` as a finite float64 ``(n, dim)`` array with ``n, dim >= 1``."""
    fix = "stack the clients' flattened updates into one (n_clients, dim) float array"
    if not isinstance(updates, np.ndarray):
        raise InvalidInputError(
            "updates must be a NumPy array",
            expected="an (n_clients, dim) float array",
            got=type(updates).__name__,
            fix=fix,
        )
    if updates.ndim != 2 or 0 in updates.shape:  # noqa: PLR2004 - a matrix
        raise InvalidInputError(
            "updates must be a non-empty matrix, one row per client",
            expected="shape (n_clients, dim) with both >= 1",
            got=f"shape {updates.shape}",
            fix=fix,
        )
    if updates.dtype.kind not in "fiu":
        raise InvalidInputError(
            "updates must be real numbers",
            expected="a float (or integer) array",
            got=f"dtype {updates.dtype}",
            fix=fix,
        )
    array = np.asarray(updates, dtype=np.float64)
    if not np.isfinite(array).all():
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1)).tolist()
        raise InvalidInputError(
            "updates contain NaN or infinite values",
            expected="finite numbers only",
            got=f"non-finite values in rows {bad[:10]}",
            fix="reject bad updates with validate_update before aggregating",
        )
    return array


def _weights(weights: object, n: int) -> np.ndarray:
    fix = "pass each client's example count, a positive number per row of updates"
    try:
        array = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != (n,):
        got = f"shape {array.shape}" if array is not None else repr(weights)[:80]
        raise InvalidInputError(
            "weights must be a vector with one entry per client",
            expected=f"an array of shape ({n},)",
            got=got,
            fix=fix,
        )
    if not (np.isfinite(array).all() and (array > 0).all()):
        raise InvalidInputError(
            "weights must be positive and finite",
            expected="example counts > 0",
            got=f"min {array.min()!r}, max {array.max()!r}",
            fix=fix,
        )
    return array


def _byzantine(f: object, n: int, *, factor: int, rule: str, paper: str) -> int:
    count = check_whole(f, "f")
    needed = factor * count + 3
    if n < needed:
        raise InvalidInputError(
            f"{rule} tolerates f Byzantine clients only when n >= {factor} f + 3 ({paper})",
            expected=f"n >= {needed} clients for f = {count}",
            got=f"n = {n}",
            fix=f"lower f to at most {max((n - 3) // factor, 0)} or aggregate more clients",
        )
    return count


# ----------------------------------------------------------------------------- distances


def _squared_distances(array: np.ndarray) -> np.ndarray:
    """Pairwise squared L2 distances via the Gram matrix of the centred rows.

    Centring first keeps ``|x|^2 + |y|^2 - 2 x.y`` from cancelling when the
    rows sit far from the origin but close to each other.
    """
    centred = array - array.mean(axis=0)
    squares = np.einsum("ij,ij->i", centred, centred)
    distances = squares[:, None] + squares[None, :] - 2.0 * (centred @ centred.T)
    np.maximum(distances, 0.0, out=distances)
    np.fill_diagonal(distances, 0.0)
    result: np.ndarray = distances
    return result


def _scores(distances: np.ndarray, neighbours: int) -> np.ndarray:
    """Each row's sum of its ``neighbours`` smallest distances to the other rows."""
    size = distances.shape[0]
    neighbours = min(neighbours, size - 1)
    if neighbours < 1:
        return np.zeros(size)
    others = distances.copy()
    np.fill_diagonal(others, np.inf)
    nearest = np.partition(others, neighbours - 1, axis=1)[:, :neighbours]
    scores: np.ndarray = nearest.sum(axis=1)
    return scores


# ----------------------------------------------------------------------------- rules


def weighted_mean(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The example-weighted mean of the rows (FedAvg; not robust: one row can move it anywhere).

    Raises:
        InvalidInputError: ``updates`` is not a finite ``(n, dim)`` array or
            ``weights`` not ``n`` positive numbers.
    """
    array = _updates(updates)
    counts = _weights(weights, array.shape[0])
    mean: np.ndarray = (counts @ array) / counts.sum()
    return mean


def krum_scores(updates: np.ndarray, f: int) -> np.ndarray:
    """Krum's score of every row: the sum of squared distances to its ``n - f - 2`` nearest rows.

    Lower is more central. Exposed so a server can log which clients Krum
    would drop.

    Raises:
        InvalidInputError: ``n < 2 f + 3`` or ``updates`` is malformed.
    """
    array = _updates(updates)
    n = array.shape[0]
    count = _byzantine(f, n, factor=2, rule="Krum", paper="Blanchard et al. 2017: 2f + 2 < n")
    return _scores(_squared_distances(array), n - count - 2)


def krum(updates: np.ndarray, weights: np.ndarray, f: int) -> np.ndarray:
    """The single row with the lowest Krum score (Blanchard et al. 2017), as a copy.

    ``weights`` are validated but do not influence the choice: Krum trusts no
    client's claimed example count. Ties go to the lowest row index.

    Raises:
        InvalidInputError: ``n < 2 f + 3``, or malformed ``updates`` / ``weights``.
    """
    array = _updates(updates)
    _weights(weights, array.shape[0])
    scores = krum_scores(array, f)
    chosen: np.ndarray = array[int(np.argmin(scores))].copy()
    return chosen


def multikrum(updates: np.ndarray, weights: np.ndarray, f: int, m: int | None = None) -> np.ndarray:
    """Multi-Krum: the example-weighted mean of the ``m`` rows with the lowest Krum scores.

    ``m`` defaults to ``n - f``; ``m = 1`` is Krum. The mean is weighted by
    example counts as in Flower's ``MultiKrum``; Blanchard et al. average the
    selected rows unweighted (the same when the counts are equal).

    Raises:
        InvalidInputError: ``n < 2 f + 3``, ``m`` outside ``1..n``, or
            malformed ``updates`` / ``weights``.
    """
    array = _updates(updates)
    n = array.shape[0]
    counts = _weights(weights, n)
    scores = krum_scores(array, f)
    keep = n - int(f) if m is None else check_whole(m, "m", minimum=1)
    if keep > n:
        raise InvalidInputError(
            "Multi-Krum cannot keep more updates than it received",
            expected=f"1 <= m <= {n}",
            got=f"m = {keep}",
            fix=f"pass m <= {n}, or leave it out for n - f = {n - int(f)}",
        )
    chosen = np.argsort(scores, kind="stable")[:keep]
    mean: np.ndarray = (counts[chosen] @ array[chosen]) / counts[chosen].sum()
    return mean


def bulyan(updates: np.ndarray, weights: np.ndarray, f: int) -> np.ndarray:
    """Bulyan over Krum (El Mhamdi et al. 2018).

    Selects ``theta = n - 2 f`` rows by repeated Krum: each round scores the
    remaining pool ``R`` with ``max(1, |R| - f - 2)`` neighbours (as Flower
    does; the paper leaves the count for the shrinking pool open), takes the
    lowest score and removes it from the pool. Then, per coordinate, it averages
    the ``beta = theta - 2 f`` selected values closest to their median.
    Unweighted, as in the paper and Flower: ``weights`` are validated only.
    Tied scores go to the lowest row index (as in Flower); late in the
    selection a single neighbour is scored and mutual nearest neighbours tie,
    so the result can depend on the order of the rows.

    Raises:
        InvalidInputError: ``n < 4 f + 3``, or malformed ``updates`` / ``weights``.
    """
    array = _updates(updates)
    n = array.shape[0]
    _weights(weights, n)
    count = _byzantine(f, n, factor=4, rule="Bulyan", paper="El Mhamdi et al. 2018: n >= 4f + 3")
    theta = n - 2 * count
    beta = theta - 2 * count
    distances = _squared_distances(array)
    pool = np.arange(n)
    chosen: list[int] = []
    for _ in range(theta):
        scores = _scores(distances[np.ix_(pool, pool)], max(1, pool.size - count - 2))
        best = int(np.argmin(scores))
        chosen.append(int(pool[best]))
        pool = np.delete(pool, best)
    selected = array[chosen]
    result = np.empty(array.shape[1])
    step = max(1, _BLOCK_ENTRIES // theta)
    for start in range(0, array.shape[1], step):
        block = selected[:, start : start + step]
        median = np.median(block, axis=0)
        closest = np.argpartition(np.abs(block - median), beta - 1, axis=0)[:beta]
        result[start : start + step] = np.take_along_axis(block, closest, axis=0).mean(axis=0)
    return result


def coordinate_median(updates: np.ndarray) -> np.ndarray:
    """The coordinate-wise median of the rows (the mean of the middle two when ``n`` is even).

    Robust to any ``f < n / 2`` Byzantine rows: each coordinate of the result
    lies between the honest rows' smallest and largest values.

    Raises:
        InvalidInputError: ``updates`` is not a finite ``(n, dim)`` array.
    """
    median: np.ndarray = np.median(_updates(updates), axis=0)
    return median


def trimmed_mean(updates: np.ndarray, beta: float) -> np.ndarray:
    """Per coordinate, the mean after dropping the ``floor(beta n)`` largest and smallest values.

    The cut is ``int(beta * n)`` from each end, as in :func:`scipy.stats.trim_mean`
    and Flower's ``FedTrimmedAvg``; it tolerates ``f`` Byzantine rows when
    ``int(beta * n) >= f``.

    Raises:
        InvalidInputError: ``beta`` is not in ``[0, 0.5)``, or ``updates`` is malformed.
    """
    array = _updates(updates)
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.number)):
        raise InvalidInputError(
            "beta must be a number",
            expected="0 <= beta < 0.5",
            got=repr(beta),
            fix="pass the fraction to trim from each end, such as 0.1",
        )
    fraction = float(beta)
    if not (math.isfinite(fraction) and 0.0 <= fraction < 0.5):  # noqa: PLR2004 - half
        raise InvalidInputError(
            "beta must lie in [0, 0.5)",
            expected="0 <= beta < 0.5 (the fraction trimmed from each end)",
            got=repr(beta),
            fix="pass the fraction to trim from each end, such as 0.1",
        )
    n = array.shape[0]
    cut = int(fraction * n)
    kept = np.partition(array, (cut, n - cut - 1), axis=0)[cut : n - cut] if cut else array
    mean: np.ndarray = kept.mean(axis=0)
    return mean


def norm_bound(updates: np.ndarray, bound: float) -> tuple[np.ndarray, int]:
    """Rows scaled to L2 norm at most ``bound`` (a copy), and how many were scaled.

    Sun et al. 2019's defence: a boosted update keeps its direction but loses
    the factor that would let it replace the global model.

    Raises:
        InvalidInputError: ``bound`` is not positive and finite, or ``updates``
            is malformed.
    """
    array = _updates(updates)
    limit = _positive(bound, "bound")
    norms = np.linalg.norm(array, axis=1)
    over = norms > limit
    factors = np.ones_like(norms)
    factors[over] = limit / norms[over]
    clipped = array * factors[:, None]
    # Rounding can leave a scaled row a hair above the bound (by either way of taking the
    # norm, which differ in the last bit); nudge those down.
    high = np.flatnonzero(np.linalg.norm(clipped, axis=1) > limit)
    while high.size:
        factors[high] = np.nextafter(factors[high], 0.0)
        clipped[high] = array[high] * factors[high, None]
        high = high[np.linalg.norm(clipped[high], axis=1) > limit]
    for row in np.flatnonzero(over):
        while float(np.linalg.norm(clipped[row])) > limit:
            factors[row] = np.nextafter(factors[row], 0.0)
            clipped[row] = array[row] * factors[row]
    return clipped, int(over.sum())


def validate_update(
    update: object, expected_shape: tuple[int, ...], *, dtype: np.dtype | None = None
) -> str | None:
    """Why ``update`` must be rejected, in one line for the server's log, or ``None`` when it is fine.

    Rejected: anything that is not a NumPy array, a shape other than
    ``expected_shape``, a dtype that is not floating point (or not ``dtype``
    when given), and NaN or infinite entries.
    """
    if not isinstance(update, np.ndarray):
        return f"not a NumPy array (got {type(update).__name__})"
    if update.shape != tuple(expected_shape):
        return f"shape {update.shape} does not match the model's {tuple(expected_shape)}"
    if dtype is not None and update.dtype != np.dtype(dtype):
        return f"dtype {update.dtype} is not the model's {np.dtype(dtype)}"
    if update.dtype.kind != "f":
        return f"dtype {update.dtype} is not floating point"
    finite = np.isfinite(update)
    if not finite.all():
        nans = int(np.isnan(update).sum())
        infinities = int(finite.size - finite.sum()) - nans
        return f"{nans} NaN and {infinities} infinite values"
    return None
