"""The numerics behind the attack monitor: one key's query history and its three signals.

Kept apart from :mod:`veil.serve._monitor` (which owns keys, policies and alerts) so that the
statistics can be calibrated and tested offline on plain arrays.

**History.** :class:`KeyHistory` keeps the last ``capacity`` encoded queries of one (key,
model) in a ring buffer that grows by doubling up to its cap (a key that sends ten queries
holds ten rows, not two thousand), with each query's predicted class and squared norm.

**PRADA** (Juuti, Szyller, Marchal and Asokan, "PRADA: Protecting against DNN Model Stealing
Attacks", EuroS&P 2019). Each query's minimum L2 distance to the earlier queries of its
predicted class (the first query of a class only opens that class's set) is kept; once
``min_queries`` distances exist, the Shapiro-Wilk W of the kept distances is the statistic
and a small W (distances far from normal) flags synthetic query streams.

**Dependence** (a sequential likelihood-ratio test of our own, built from textbook parts).
:class:`Reference` fits two Gaussians on encoded rows of the model's real data: one with the
full covariance and one with its diagonal only. Their log-likelihood ratio
``l(x) = log N(x; mu, S) - log N(x; mu, diag S)`` is high for rows whose columns co-vary as
real rows do (education and its number, relationship "Husband" and sex "Male") and very
low for rows that break those dependencies, which is exactly what an attacker who draws each
column from its marginal does (Tramer et al., "Stealing Machine Learning Models via
Prediction APIs", USENIX Security 2016, sample queries that way). Fitting a density model
per column pair or a classifier would do too; two Gaussians cost one triangular solve per
query and need no training loop. The score of each query is turned into a Bernoulli
indicator ``l(x) < tau``, with ``tau`` the ``p0`` quantile of ``l`` on held-out reference
rows, so that on real traffic the indicator is Bernoulli(p0) whatever the shape of ``l``;
Page's CUSUM (Page, "Continuous inspection schemes", Biometrika 1954) of Wald's
log-likelihood ratio for Bernoulli(p1) against Bernoulli(p0) then alerts when it passes
``h``. The indicator makes the false-alarm rate a property of the reference quantile, not
of the Gaussian fit, which is only a score.

**Probing** (membership inference by perturbation, e.g. Choquette-Choo et al., "Label-Only
Membership Inference Attacks", ICML 2021, who query many noisy copies of one record). A
query is a near-duplicate when an earlier query of the key lies within ``radius`` of it
(exact repeats included); the signal is the count of near-duplicates among the last
``window`` queries. The radius is a fraction of the reference rows' median nearest-neighbour
distance, so it means the same on any encoding.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from veil.errors import InvalidInputError

__all__ = ["KeyHistory", "Reference", "cusum_steps"]

Array = npt.NDArray[np.float64]

# The smallest history a reference needs: the held-out half sets the p0 quantile.
MIN_REFERENCE_ROWS = 200
_START_ROWS = 64


def _as_rows(x: npt.ArrayLike, what: str) -> Array:
    rows = np.asarray(x, dtype=np.float64)
    if rows.ndim != 2 or not np.isfinite(rows).all():  # noqa: PLR2004
        raise InvalidInputError(
            f"{what} must be a finite 2-D array of encoded rows",
            expected="shape (n, features), finite values",
            got=f"shape {rows.shape}" + ("" if rows.ndim != 2 else ", non-finite values"),  # noqa: PLR2004
        )
    return rows


@dataclass(frozen=True)
class Reference:
    """The real-data reference of one model: the dependence score and the probing scale.

    Build it with :meth:`fit`. Attributes:
        mean: Mean of the fitting half.
        full_factor: Inverse Cholesky factor of the regularised full covariance.
        diag_var: Regularised per-feature variances.
        log_det_gap: ``log det(full) - log det(diag)`` (enters every score).
        tau: The ``p0`` quantile of scores on the held-out half.
        p0: The quantile level (the indicator's rate on real rows).
        nn_distance: Median distance from a held-out row to its nearest fitting row.
    """

    mean: Array
    full_factor: Array
    diag_var: Array
    log_det_gap: float
    tau: float
    p0: float
    nn_distance: float

    @classmethod
    def fit(cls, x: npt.ArrayLike, *, p0: float = 0.05, ridge: float = 1e-2) -> Reference:
        """Fit on encoded real rows: even rows fit the Gaussians, odd rows set ``tau``.

        Args:
            x: At least 200 encoded rows of the model's real data.
            p0: Rate at which real rows fall under ``tau``.
            ridge: Added to every variance, as a fraction of the mean variance, so that
                one-hot groups (whose columns sum to one) give an invertible covariance.

        Raises:
            InvalidInputError: Too few rows, non-finite values, or ``p0``/``ridge`` out of range.
        """
        rows = _as_rows(x, "the reference")
        if len(rows) < MIN_REFERENCE_ROWS:
            raise InvalidInputError(
                "the monitor's reference sample is too small",
                expected=f"at least {MIN_REFERENCE_ROWS} encoded rows of the model's data",
                got=f"{len(rows)} rows",
                fix="pass more reference rows, or disable the dependence signal",
            )
        if not (0.0 < p0 < 0.5) or not (ridge > 0.0):  # noqa: PLR2004
            raise InvalidInputError(
                "bad reference parameters",
                expected="0 < p0 < 0.5 and ridge > 0",
                got=f"p0={p0}, ridge={ridge}",
            )
        fit_rows, held = rows[0::2], rows[1::2]
        mean = fit_rows.mean(axis=0)
        cov = np.atleast_2d(np.cov(fit_rows, rowvar=False))
        lam = ridge * max(float(np.mean(np.diag(cov))), 1e-12)
        full = cov + lam * np.eye(len(cov))
        chol = np.linalg.cholesky(full)
        factor = np.linalg.inv(chol)
        diag_var = np.diag(cov) + lam
        gap = 2.0 * float(np.sum(np.log(np.diag(chol)))) - float(np.sum(np.log(diag_var)))
        draft = cls(mean, factor, diag_var, gap, 0.0, p0, 1.0)
        tau = float(np.quantile(draft.score(held), p0))
        sq_fit = np.einsum("ij,ij->i", fit_rows, fit_rows)
        nn = np.empty(len(held))
        for start in range(0, len(held), 512):
            part = held[start : start + 512]
            sq = np.einsum("ij,ij->i", part, part)[:, None] + sq_fit[None, :]
            sq -= 2.0 * part @ fit_rows.T
            nn[start : start + 512] = np.sqrt(np.maximum(sq.min(axis=1), 0.0))
        return cls(mean, factor, diag_var, gap, tau, p0, float(np.median(nn)))

    @property
    def width(self) -> int:
        return len(self.mean)

    def score(self, x: npt.ArrayLike) -> Array:
        """``log N(x; mu, S_full) - log N(x; mu, S_diag)`` per row (high: real-like)."""
        centred = np.asarray(x, dtype=np.float64) - self.mean
        if len(centred) == 0:
            return np.empty(0)
        # Row by row for the reason KeyHistory gives (no BLAS threads for a small product).
        whitened = np.stack([self.full_factor @ row for row in centred])
        full = np.einsum("ij,ij->i", whitened, whitened)
        diag = np.einsum("ij,ij->i", centred, centred / self.diag_var)
        scores: Array = 0.5 * (diag - full) - 0.5 * self.log_det_gap
        return scores


def cusum_steps(p0: float, p1: float) -> tuple[float, float]:
    """Wald's log-likelihood-ratio increments for a hit and a miss (Bernoulli p1 vs p0)."""
    return float(np.log(p1 / p0)), float(np.log((1.0 - p1) / (1.0 - p0)))


@dataclass
class Observation:
    """What one batch of queries did to a key's signals (the statistics after the batch)."""

    queries: int
    prada_w: float | None
    dependence: float | None  # the CUSUM's highest value during the batch
    near_duplicates: int


class KeyHistory:
    """The bounded query history of one (key, model) and its running statistics.

    Args:
        capacity: Most queries kept (older ones drop out of every signal).
        window: Queries over which near-duplicates are counted.
    """

    def __init__(self, capacity: int, window: int) -> None:
        self.capacity = capacity
        self.rows: Array = np.empty((0, 0))
        self.labels: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self.norms: Array = np.empty(0)
        self.filled = 0
        self.next = 0
        self.seen = 0
        self.distances: deque[float] = deque(maxlen=capacity)
        self.duplicates: deque[bool] = deque(maxlen=window)
        self.cusum = 0.0

    @property
    def nbytes(self) -> int:
        return int(self.rows.nbytes + self.labels.nbytes + self.norms.nbytes)

    def _grow(self, width: int, need: int) -> None:
        if self.rows.shape[1:] != (width,):
            if self.filled:
                raise InvalidInputError(
                    "queries of one model changed width",
                    expected=f"{self.rows.shape[1]} encoded features",
                    got=str(width),
                )
            self.rows = np.empty((0, width))
        size = len(self.rows)
        if self.filled + need <= size or size >= self.capacity:
            return
        new = min(self.capacity, max(_START_ROWS, 2 * size, self.filled + need))
        # Only grown before the ring wraps (filled < capacity), so rows 0..filled are in order.
        rows, labels, norms = np.empty((new, width)), np.zeros(new, np.int64), np.zeros(new)
        rows[: self.filled] = self.rows[: self.filled]
        labels[: self.filled] = self.labels[: self.filled]
        norms[: self.filled] = self.norms[: self.filled]
        self.rows, self.labels, self.norms = rows, labels, norms
        self.next = self.filled

    def _push(self, row: Array, label: int, norm: float) -> None:
        self.rows[self.next] = row
        self.labels[self.next] = label
        self.norms[self.next] = norm
        self.next = (self.next + 1) % len(self.rows)
        self.filled = min(self.filled + 1, len(self.rows))
        self.seen += 1

    def observe(
        self,
        x: npt.ArrayLike,
        labels: npt.ArrayLike,
        *,
        radius: float,
        reference: Reference | None,
        cusum: tuple[float, float] | None,
        min_queries: int,
    ) -> Observation:
        """Add a batch (in order) and return the statistics after it.

        Args:
            x: Encoded queries, shape (n, features).
            labels: The class predicted for each query.
            radius: Near-duplicate radius (absolute, in encoded units).
            reference: The dependence score's reference; None turns that signal off.
            cusum: ``(hit, miss)``: the CUSUM's increments (:func:`cusum_steps`); None: off.
            min_queries: Distances needed before PRADA's W is computed.
        """
        # float64 throughout: one BLAS product per batch (float32 rows against float64
        # queries fall off BLAS, 20x slower), and an exact repeat is at distance ~0.
        rows = _as_rows(x, "the queries")
        classes = np.asarray(labels).reshape(-1).astype(np.int64)
        if len(classes) != len(rows):
            raise InvalidInputError(
                "one predicted class per query",
                expected=f"{len(rows)} labels",
                got=str(len(classes)),
            )
        if reference is not None and reference.width != rows.shape[1]:
            raise InvalidInputError(
                "the monitor's reference and the queries differ in width",
                expected=f"{reference.width} encoded features",
                got=str(rows.shape[1]),
                fix="fit the reference on rows encoded as the model's inputs",
            )
        norms = np.einsum("ij,ij->i", rows, rows)
        for start in range(0, len(rows), max(self.capacity - 1, 1)):
            stop = min(len(rows), start + max(self.capacity - 1, 1))
            self._observe_block(rows[start:stop], classes[start:stop], norms[start:stop], radius)
        peak: float | None = None
        if reference is not None and cusum is not None:
            hit, miss = cusum
            peak = self.cusum
            for low in reference.score(rows) < reference.tau:
                self.cusum = max(0.0, self.cusum + (hit if low else miss))
                peak = max(peak, self.cusum)
        w: float | None = None
        if len(self.distances) >= min_queries:
            d = np.fromiter(self.distances, float, len(self.distances))
            if np.ptp(d) > 0.0:
                w = float(stats.shapiro(d).statistic)
        return Observation(
            queries=self.seen,
            prada_w=w,
            dependence=peak,
            near_duplicates=int(sum(self.duplicates)),
        )

    def _observe_block(
        self, rows: Array, classes: npt.NDArray[np.int64], norms: Array, radius: float
    ) -> None:
        self._grow(rows.shape[1], len(rows))
        stored, stored_norms = self.rows[: self.filled], self.norms[: self.filled]
        stored_labels = self.labels[: self.filled]
        limit = max(radius * radius, 1e-9)  # radius 0: exact repeats (up to rounding)
        # One matrix-vector product per query, not one matrix product per batch: a small
        # matrix product starts OpenBLAS's threads, which on a busy two-core host cost 15 ms
        # where the products themselves cost 0.05 ms per query.
        for i, row in enumerate(rows):
            old = stored_norms + norms[i] - 2.0 * (stored @ row)
            new = norms[:i] + norms[i] - 2.0 * (rows[:i] @ row)
            nearest = min(old.min(initial=np.inf), new.min(initial=np.inf))
            same = min(
                old[stored_labels == classes[i]].min(initial=np.inf),
                new[classes[:i] == classes[i]].min(initial=np.inf),
            )
            if np.isfinite(same):
                self.distances.append(float(np.sqrt(max(same, 0.0))))
            self.duplicates.append(bool(nearest <= limit))
        for i, row in enumerate(rows):
            self._push(row, int(classes[i]), float(norms[i]))

    def reset(self, signal: str) -> None:
        """Forget one signal's statistic (after an operator clears its alert); the rows stay."""
        if signal == "prada":
            self.distances.clear()
        elif signal == "probing":
            self.duplicates.clear()
        else:
            self.cusum = 0.0
