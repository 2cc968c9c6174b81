"""The attack monitor: per-key detection of model extraction and membership probing.

:class:`Monitor` watches every prediction request (the encoded rows and the predicted
classes) per (service key, model) and raises an :class:`~veil.serve._alerts.Alert` when a
signal of :mod:`veil.serve._monitor_signals` crosses its threshold:

- ``prada``: Shapiro-Wilk W of the key's minimum same-class query distances falls below
  ``prada_delta`` (Juuti et al., EuroS&P 2019);
- ``dependence``: the CUSUM of "this query breaks the real data's correlations" passes
  ``dependence_threshold`` (the signal that catches attackers who sample each column from
  its marginal, Tramer et al., USENIX Security 2016);
- ``probing``: ``probing_count`` of the key's last ``probing_window`` queries lie within
  ``probing_radius`` reference nearest-neighbour distances of an earlier query (label-only
  membership inference by perturbation, Choquette-Choo et al., ICML 2021).

One alert per (key, model, signal) until :meth:`Monitor.reset`; the sink
(:class:`~veil.serve._alerts.AlertSink`) acts on it as the policy says.

**Calibration** (UCI Adult, features encoded as ``veil.train.FeatureEncoder`` does with the
benchmark's declared bounds, a logistic regression, 5,000 training rows as the reference;
benign keys are 163 consecutive rows of the *training* file outside the reference, the size
of one of 100 keys replaying the test file; attackers draw every column independently from
its training marginal). The defaults below come from those runs:

- ``dependence_threshold = 20``: the largest CUSUM of 259 benign keys was 11.9; under the
  null (Bernoulli(0.05) indicators) a CUSUM of 20 is never reached in 20,000 simulated
  2,000-query keys, whereas marginal samplers (82% of their queries under ``tau``) reach it
  after about 10 queries.
- ``prada_delta = 0.82`` with ``prada_min_queries = 50``: no W below 0.854 among 2,000
  benign keys of 163 queries, and benign streams of 4,000 queries stay above 0.86 (W drifts
  down as a key's history fills: denser queries, more skewed distances). With 20 distances
  W is too noisy: its 0.2% benign quantile was 0.78, and that setting alerted on 2 of the
  100 keys replaying the test file. PRADA does *not* separate marginal sampling from real
  traffic on Adult (the attackers' W is distributed as the benign one): the distances of
  independent draws from realistic marginals look natural. It is kept for synthetic,
  perturbation-driven streams (Jacobian-based augmentation, the attacks PRADA was built for).
- ``probing_radius = 0.25``, ``probing_window = 50``, ``probing_count = 25``: on a benign key
  of 6,000 training rows, 16% of queries had an earlier query within a quarter of the
  reference's median nearest-neighbour distance (Adult has many near-identical people) and
  no window of 50 held more than 18; 60 copies of one record with Gaussian noise of 0.05 on
  its scaled numeric columns pass 25 after about 27 queries.

**Bounded state.** Each (key, model) keeps at most ``history`` encoded queries (2,000 by
default: 1.7 MB at Adult's 104 features), grown on demand. The monitor holds at most
``max_keys`` (key, model) pairs and ``max_bytes`` of histories (256 MiB by default: some
150 full Adult histories), dropping the least recently seen pair first. A dropped pair
starts afresh, as does every pair when the worker restarts; an attacker who wants to be
forgotten must keep that many other keys busier than its own.

**Per worker.** With several workers each process monitors the requests it serves: a key
whose requests are spread over ``N`` workers is seen ``1/N`` of the time by each, which slows
detection by up to ``N`` times (the dependence signal needs ~10 queries per worker).
Suspension is shared (the key is revoked in the store); throttling is shared when the
limits live in Redis.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError
from veil.serve._alerts import ACTIONS, Alert, AlertSink, check_webhook
from veil.serve._limits import check_rate
from veil.serve._monitor_signals import KeyHistory, Reference, cusum_steps

__all__ = ["Monitor", "MonitorPolicy"]

SIGNALS = ("prada", "dependence", "probing")
MAX_CLASSES = 1000  # distinct predicted classes remembered per model
# The CUSUM's alternative: half of an extraction stream's queries break the correlations
# (marginal samplers on Adult break them 82% of the time; p1 below the truth costs a few
# queries, above it costs false alarms).
DEPENDENCE_P1 = 0.5


@dataclass(frozen=True)
class MonitorPolicy:
    """How one served model is watched, and what an alert does (a policy file's ``monitor``).

    Attributes:
        enabled: Watch this model at all.
        extraction: Run the extraction signals (``prada`` and ``dependence``).
        probing: Run the near-duplicate signal.
        action: ``"alert"`` (record, log, webhook), ``"throttle"`` (also lower the key's
            rate to ``throttle_rate`` for ``throttle_seconds``) or ``"suspend"`` (also
            revoke the key).
        throttle_rate: The throttled rate, in the ``limits`` notation ("1/second").
        throttle_seconds: How long the throttle lasts.
        webhook: A loopback URL to POST alerts to (see :func:`check_webhook`).
        history: Queries kept per key and model.
        prada_delta: PRADA alerts when W falls below this.
        prada_min_queries: Distances needed before W is computed.
        dependence_threshold: The dependence CUSUM alerts at this value.
        dependence_p0: Rate of real rows under the score threshold (the reference quantile).
        probing_radius: Near-duplicate radius, in reference nearest-neighbour distances.
        probing_window: Queries over which near-duplicates are counted.
        probing_count: Near-duplicates in the window that raise the alert.
    """

    enabled: bool = True
    extraction: bool = True
    probing: bool = True
    action: str = "alert"
    throttle_rate: str = "1/second"
    throttle_seconds: float = 3600.0
    webhook: str | None = None
    history: int = 2000
    prada_delta: float = 0.82
    prada_min_queries: int = 50
    dependence_threshold: float = 20.0
    dependence_p0: float = 0.05
    probing_radius: float = 0.25
    probing_window: int = 50
    probing_count: int = 25

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str, str]] = [
            (self.action in ACTIONS, "action", " | ".join(ACTIONS)),
            (self.throttle_seconds > 0, "throttle_seconds", "a number of seconds > 0"),
            (self.history >= 2, "history", "an integer >= 2"),  # noqa: PLR2004
            (0.0 < self.prada_delta < 1.0, "prada_delta", "a W threshold in (0, 1)"),
            (self.prada_min_queries >= 3, "prada_min_queries", "an integer >= 3"),  # noqa: PLR2004
            (self.dependence_threshold > 0, "dependence_threshold", "a number > 0"),
            (
                0.0 < self.dependence_p0 < DEPENDENCE_P1,
                "dependence_p0",
                f"a rate in (0, {DEPENDENCE_P1})",
            ),
            (self.probing_radius >= 0, "probing_radius", "a number >= 0"),
            (self.probing_window >= 1, "probing_window", "an integer >= 1"),
            (
                1 <= self.probing_count <= self.probing_window,
                "probing_count",
                f"an integer in [1, probing_window={self.probing_window}]",
            ),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise InvalidInputError(
                    f"bad monitor policy: {name}",
                    expected=expected,
                    got=repr(getattr(self, name)),
                    fix=f"set monitor.{name} in the policy file, or leave it out for the default",
                )
        check_rate(self.throttle_rate)
        check_webhook(self.webhook)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> MonitorPolicy:
        """The policy a policy file's ``monitor:`` mapping declares (strict: unknown keys and
        wrong types are refused; missing keys take the defaults)."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidInputError(
                "the monitor policy must be a mapping",
                expected="monitor: {action: alert, ...}",
                got=type(data).__name__,
            )
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InvalidInputError(
                "unknown keys in the monitor policy",
                expected=", ".join(known),
                got=", ".join(map(str, unknown)),
                fix="remove or correct them (keys are case-sensitive)",
            )
        values = {name: _coerce(name, known[name].type, value) for name, value in data.items()}
        return cls(**values)


def _coerce(name: str, kind: Any, value: Any) -> Any:
    kind = str(kind)
    want: tuple[type, ...]
    if kind == "bool":
        want = (bool,)
    elif kind == "int":
        want = (int,)
    elif kind == "float":
        want = (int, float)
    else:  # str, str | None
        want = (str,) if kind == "str" else (str, type(None))
    if not isinstance(value, want) or (kind in ("int", "float") and isinstance(value, bool)):
        raise InvalidInputError(
            f"bad monitor policy: {name}",
            expected=kind,
            got=f"{value!r} ({type(value).__name__})",
        )
    return float(value) if kind == "float" and isinstance(value, int | float) else value


class _Watched:
    """The monitor's state for one (key, model)."""

    def __init__(self, policy: MonitorPolicy) -> None:
        self.lock = threading.Lock()
        self.history = KeyHistory(policy.history, policy.probing_window)
        self.alerted: set[str] = set()
        self.tracked = True  # still in the monitor's table
        self.counted = 0  # bytes of this history in the monitor's total


class Monitor:
    """Per-key attack detection for every served model.

    Args:
        alerts: Where alerts go (acts, records, logs, posts).
        max_keys: (key, model) pairs tracked at once; the least recently seen is dropped.
        max_bytes: Bytes of query histories held at once (the same rule).

    Thread-safe: handlers call :meth:`observe` from FastAPI's thread pool; one lock guards
    the table of keys, one lock per key its history.
    """

    def __init__(
        self, alerts: AlertSink, *, max_keys: int = 256, max_bytes: int = 256 * 2**20
    ) -> None:
        if max_keys < 1 or max_bytes < 1:
            raise InvalidInputError(
                "the monitor must track at least one key",
                expected="max_keys >= 1 and max_bytes >= 1",
                got=f"max_keys={max_keys}, max_bytes={max_bytes}",
            )
        self.alerts = alerts
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self._bytes = 0  # sum of the tracked histories' nbytes
        self._references: dict[str, Reference] = {}
        self._classes: dict[str, dict[Any, int]] = {}
        self._watched: OrderedDict[tuple[str, str], _Watched] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------ setup
    def fit_reference(self, model: str, x: npt.ArrayLike) -> None:
        """Fit ``model``'s reference on encoded real rows (at least 200; thousands are better).

        Without a reference, ``dependence`` is off and ``probing`` counts exact repeats only.

        Raises:
            InvalidInputError: Fewer than 200 rows, or non-finite values.
        """
        reference = Reference.fit(x)
        with self._lock:
            self._references[model] = reference

    def reference(self, model: str) -> Reference | None:
        return self._references.get(model)

    # ------------------------------------------------------------ the hot path
    def observe(  # noqa: PLR0917  (serve.md's contract; the predict route calls it so)
        self,
        key_id: str,
        principal: str,
        model: str,
        x: npt.ArrayLike,
        labels: npt.ArrayLike,
        policy: MonitorPolicy,
    ) -> list[Alert]:
        """Add one request's queries (encoded rows, predicted classes) and alert if due.

        Returns the alerts raised by this call (already emitted to the sink).

        Raises:
            InvalidInputError: ``x`` is not a finite 2-D array, ``labels`` do not match it,
                or the rows' width differs from the reference or the key's earlier queries.
        """
        if not policy.enabled or not (policy.extraction or policy.probing):
            return []
        classes = self._codes(model, labels)
        reference = self._references.get(model)
        watched = self._watch(key_id, model, policy)
        with watched.lock:
            seen = watched.history.observe(
                x,
                classes,
                radius=policy.probing_radius * reference.nn_distance if reference else 0.0,
                reference=reference if policy.extraction else None,
                cusum=cusum_steps(policy.dependence_p0, DEPENDENCE_P1),
                min_queries=policy.prada_min_queries,
            )
            found: list[tuple[str, float, float, str]] = []
            if policy.extraction and seen.prada_w is not None and seen.prada_w < policy.prada_delta:
                found.append(("prada", seen.prada_w, policy.prada_delta, "below"))
            if (
                policy.extraction
                and seen.dependence is not None
                and seen.dependence >= policy.dependence_threshold
            ):
                found.append(("dependence", seen.dependence, policy.dependence_threshold, "above"))
            if policy.probing and seen.near_duplicates >= policy.probing_count:
                found.append(
                    ("probing", float(seen.near_duplicates), float(policy.probing_count), "above")
                )
            new = [f for f in found if f[0] not in watched.alerted]
            watched.alerted.update(f[0] for f in new)
            held = watched.history.nbytes
        self._account(watched, held)
        raised = [
            Alert(
                signal,
                statistic,
                threshold,
                direction,
                seen.queries,
                model,
                key_id,
                principal,
                policy.action,
            )
            for signal, statistic, threshold, direction in new
        ]
        for alert in raised:
            self.alerts.emit(
                alert,
                throttle_rate=policy.throttle_rate,
                throttle_seconds=policy.throttle_seconds,
                webhook=policy.webhook,
            )
        return raised

    def _codes(self, model: str, labels: npt.ArrayLike) -> npt.NDArray[np.int64]:
        values = np.asarray(labels)
        if values.ndim == 2:  # noqa: PLR2004  (scores: the predicted class is the largest)
            return np.asarray(values.argmax(axis=1), dtype=np.int64)
        with self._lock:
            codes = self._classes.setdefault(model, {})
            found = []
            for value in values.reshape(-1).tolist():
                code = codes.get(value)
                if code is None:
                    # Capped: unbounded answers (a regressor's) share the last code.
                    code = min(len(codes), MAX_CLASSES)
                    if code < MAX_CLASSES:
                        codes[value] = code
                found.append(code)
        return np.array(found, dtype=np.int64)

    def _watch(self, key_id: str, model: str, policy: MonitorPolicy) -> _Watched:
        with self._lock:
            watched = self._watched.get((key_id, model))
            if watched is None:
                watched = self._watched[key_id, model] = _Watched(policy)
                while len(self._watched) > self.max_keys:
                    self._forget(next(iter(self._watched)))
            else:
                self._watched.move_to_end((key_id, model))
            return watched

    def _account(self, watched: _Watched, held: int) -> None:
        """Count ``watched``'s new size, then drop the least recent pairs while over budget."""
        with self._lock:
            if not watched.tracked:  # dropped meanwhile: its bytes were already taken off
                return
            self._bytes += held - watched.counted
            watched.counted = held
            while self._bytes > self.max_bytes and len(self._watched) > 1:
                self._forget(next(iter(self._watched)))

    def _forget(self, pair: tuple[str, str]) -> None:
        watched = self._watched.pop(pair)  # caller holds self._lock
        watched.tracked = False
        self._bytes -= watched.counted

    # ------------------------------------------------------------ operations
    def reset(self, key_id: str, model: str | None = None, signal: str | None = None) -> int:
        """Clear alerts (and the statistics behind them) of a key; return the pairs reset.

        Args:
            key_id: The key.
            model: Only this model (default: all).
            signal: Only this signal (default: all three, and the history is dropped).
        """
        if signal is not None and signal not in SIGNALS:
            raise InvalidInputError(
                "unknown monitor signal", expected=" | ".join(SIGNALS), got=repr(signal)
            )
        with self._lock:
            pairs = [p for p in self._watched if p[0] == key_id and model in (None, p[1])]
            if signal is None:
                for pair in pairs:
                    self._forget(pair)
                return len(pairs)
            targets = [self._watched[p] for p in pairs]
        for watched in targets:
            with watched.lock:
                watched.alerted.discard(signal)
                watched.history.reset(signal)
        return len(targets)

    def close(self) -> None:
        """Send queued webhooks and stop the sink's thread (the gateway's shutdown)."""
        self.alerts.close()

    def stats(self) -> dict[str, int]:
        """Pairs tracked and the bytes their query histories hold (for /readyz and tests)."""
        with self._lock:
            return {"keys": len(self._watched), "bytes": self._bytes}
