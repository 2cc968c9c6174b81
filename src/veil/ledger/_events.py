"""Privacy events: a faithful description of what ran, apart from its accounting.

A release is recorded as the mechanism that produced it (Laplace with scale
``b`` and sensitivity ``s``, Gaussian with ``sigma``, a Poisson-subsampled
Gaussian with ``q``, ``sigma`` and ``steps``, randomized response with ``p``,
...), not as an epsilon: an accountant turns a list of such descriptions into
a tight epsilon for the whole history. The descriptions are Google
``dp_accounting`` events, so its PLD and RDP accountants compose them; Veil adds
three events ``dp_accounting`` lacks:

* :class:`EpsilonDeltaDpEvent`: a mechanism known only by its (epsilon, delta)
  guarantee (report-noisy-max with exponential noise, the sparse vector
  technique, partition selection). PLD composes it tightly through the
  worst-case privacy-loss distribution of an (epsilon, delta)-DP mechanism.
* :class:`ExponentialDpEvent`: the exponential mechanism (softmax selection,
  Gumbel noisy max), whose zCDP cost is a quarter of a generic pure-epsilon
  mechanism's.
* :class:`DiscreteGaussianDpEvent`: OpenDP's Gaussian noise on integers.

Events are stored as JSON (:func:`event_to_dict`), the form an auditor reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import attr
from dp_accounting import dp_event

from veil.errors import InvalidInputError

__all__ = [
    "DiscreteGaussianDpEvent",
    "EpsilonDeltaDpEvent",
    "ExponentialDpEvent",
    "Mechanism",
    "PrivacyEvent",
    "event_from_dict",
    "event_to_dict",
    "validate_event",
]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class EpsilonDeltaDpEvent(dp_event.DpEvent):  # type: ignore[misc]
    """A mechanism described only by its (epsilon, delta)-DP guarantee."""

    epsilon: float
    delta: float = 0.0


@attr.s(frozen=True, slots=True, auto_attribs=True)
class DiscreteGaussianDpEvent(dp_event.DpEvent):  # type: ignore[misc]
    """Discrete Gaussian noise N_Z(0, sigma^2) added to an integer query of L2 sensitivity ``sensitivity``."""

    sigma: float
    sensitivity: int = 1


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ExponentialDpEvent(dp_event.DpEvent):  # type: ignore[misc]
    """One run of the exponential mechanism at ``epsilon``: softmax selection, ``exp(eps u / (2 du))``.

    The mechanism is epsilon-DP and, more strongly, epsilon-bounded-range
    (Durfee and Rogers 2019), hence ``epsilon^2 / 8``-zCDP (Cesar and Rogers
    2021, "Bounding, concentrating, and truncating"): four times less rho than
    the ``epsilon^2 / 2`` of a generic epsilon-DP mechanism, which is what AIM
    and MST's accounting relies on. The
    zCDP total (:func:`~veil.ledger.zcdp_rho`) and the RDP cross-check use that
    bound. The PLD accountant composes it as the worst-case privacy-loss
    distribution of an (epsilon, 0)-DP mechanism: a valid upper bound, not the
    tight one (no privacy-loss distribution specific to bounded range is used),
    so over many selections RDP's answer can be the smaller of the two.
    """

    epsilon: float


_VEIL_EVENTS: dict[str, type[dp_event.DpEvent]] = {
    "EpsilonDeltaDpEvent": EpsilonDeltaDpEvent,
    "ExponentialDpEvent": ExponentialDpEvent,
    "DiscreteGaussianDpEvent": DiscreteGaussianDpEvent,
}
# The dp_accounting events a ledger may hold (all that its PLD or RDP accountants compose).
_DPA_EVENTS = (
    "NoOpDpEvent",
    "NonPrivateDpEvent",
    "GaussianDpEvent",
    "LaplaceDpEvent",
    "DiscreteLaplaceDpEvent",
    "PoissonSampledDpEvent",
    "SampledWithoutReplacementDpEvent",
    "SelfComposedDpEvent",
    "ComposedDpEvent",
    "ZCDpEvent",
)
EVENT_TYPES: dict[str, type[dp_event.DpEvent]] = {
    **{name: getattr(dp_event, name) for name in _DPA_EVENTS},
    **_VEIL_EVENTS,
}


def event_to_dict(event: dp_event.DpEvent) -> dict[str, Any]:
    """A JSON-ready description of ``event`` (nested events become nested objects)."""
    name = type(event).__name__
    if EVENT_TYPES.get(name) is not type(event):
        raise InvalidInputError(
            "this privacy event cannot be recorded",
            expected=f"one of {sorted(EVENT_TYPES)}",
            got=name,
        )
    out: dict[str, Any] = {"type": name}
    for a in attr.fields(type(event)):
        value = getattr(event, a.name)
        if isinstance(value, dp_event.DpEvent):
            out[a.name] = event_to_dict(value)
        elif isinstance(value, (list, tuple)):
            out[a.name] = [event_to_dict(v) for v in value]
        else:
            out[a.name] = value
    return out


def event_from_dict(data: Mapping[str, Any]) -> dp_event.DpEvent:
    """Inverse of :func:`event_to_dict`."""
    name = data.get("type")
    cls = EVENT_TYPES.get(str(name))
    if cls is None:
        raise InvalidInputError(
            "unknown privacy event type in the ledger",
            expected=f"one of {sorted(EVENT_TYPES)}",
            got=repr(name),
            fix="upgrade Veil: the ledger was written by a newer version",
        )
    kwargs: dict[str, Any] = {}
    for a in attr.fields(cls):
        if a.name not in data:
            continue
        value = data[a.name]
        if isinstance(value, Mapping):
            kwargs[a.name] = event_from_dict(value)
        elif isinstance(value, list):
            kwargs[a.name] = [event_from_dict(v) for v in value]
        else:
            kwargs[a.name] = value
    return cls(**kwargs)


@dataclass(frozen=True)
class Mechanism:
    """One mechanism that ran: its name, its human parameters and its accounting event.

    Attributes:
        name: ``laplace``, ``gaussian``, ``discrete_laplace``, ``exponential``, ...
        parameters: What an auditor needs to re-derive the guarantee (scale,
            sensitivity, sigma, sampling rate, steps, ...).
        dp_event: The ``dp_accounting`` event the accountants compose.
    """

    name: str
    parameters: Mapping[str, Any]
    dp_event: dp_event.DpEvent

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "parameters": dict(self.parameters),
            "dp_event": event_to_dict(self.dp_event),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Mechanism:
        return cls(
            name=str(data["name"]),
            parameters=dict(data.get("parameters", {})),
            dp_event=event_from_dict(data["dp_event"]),
        )

    # Constructors for the mechanisms Veil and its callers run.
    @classmethod
    def laplace(cls, scale: float, sensitivity: float, **extra: Any) -> Mechanism:
        """Laplace noise of ``scale`` on a query of L1 ``sensitivity`` (epsilon = sensitivity / scale)."""
        _positive(scale=scale, sensitivity=sensitivity)
        return cls(
            "laplace",
            {"scale": scale, "sensitivity": sensitivity, **extra},
            dp_event.LaplaceDpEvent(noise_multiplier=scale / sensitivity),
        )

    @classmethod
    def discrete_laplace(cls, scale: float, sensitivity: int, **extra: Any) -> Mechanism:
        """Discrete Laplace noise (P(k) proportional to exp(-|k| / scale)) on an integer query."""
        _positive(scale=scale, sensitivity=sensitivity)
        return cls(
            "discrete_laplace",
            {"scale": scale, "sensitivity": sensitivity, **extra},
            dp_event.DiscreteLaplaceDpEvent(
                noise_parameter=1.0 / scale, sensitivity=int(sensitivity)
            ),
        )

    @classmethod
    def gaussian(cls, sigma: float, sensitivity: float, **extra: Any) -> Mechanism:
        """Gaussian noise N(0, sigma^2) on a query of L2 ``sensitivity``."""
        _positive(sigma=sigma, sensitivity=sensitivity)
        return cls(
            "gaussian",
            {"sigma": sigma, "sensitivity": sensitivity, **extra},
            dp_event.GaussianDpEvent(noise_multiplier=sigma / sensitivity),
        )

    @classmethod
    def discrete_gaussian(cls, sigma: float, sensitivity: int, **extra: Any) -> Mechanism:
        """Discrete Gaussian noise on an integer query of L2 ``sensitivity``."""
        _positive(sigma=sigma, sensitivity=sensitivity)
        return cls(
            "discrete_gaussian",
            {"sigma": sigma, "sensitivity": sensitivity, **extra},
            DiscreteGaussianDpEvent(sigma=sigma, sensitivity=int(sensitivity)),
        )

    @classmethod
    def subsampled_gaussian(
        cls, sampling_rate: float, noise_multiplier: float, steps: int, **extra: Any
    ) -> Mechanism:
        """``steps`` rounds of a Poisson-subsampled Gaussian (DP-SGD, federated rounds)."""
        _positive(noise_multiplier=noise_multiplier, steps=steps)
        if int(steps) != steps:
            raise InvalidInputError(
                "steps must be a whole number", expected="an integer >= 1", got=repr(steps)
            )
        if not 0 < sampling_rate <= 1:
            raise InvalidInputError(
                "sampling rate out of range", expected="0 < q <= 1", got=repr(sampling_rate)
            )
        event = dp_event.SelfComposedDpEvent(
            dp_event.PoissonSampledDpEvent(
                sampling_rate, dp_event.GaussianDpEvent(noise_multiplier)
            ),
            int(steps),
        )
        return cls(
            "poisson_subsampled_gaussian",
            {
                "sampling_rate": sampling_rate,
                "noise_multiplier": noise_multiplier,
                "steps": int(steps),
                **extra,
            },
            event,
        )

    @classmethod
    def randomized_response(
        cls, truth_probability: float, categories: int, **extra: Any
    ) -> Mechanism:
        """k-ary randomized response: the truth with ``truth_probability``, else another category uniformly."""
        k = int(categories)
        if k < 2 or not 1.0 / k <= truth_probability < 1:  # noqa: PLR2004
            raise InvalidInputError(
                "randomized response parameters out of range",
                expected="categories >= 2 and 1/categories <= truth probability < 1",
                got=f"categories={categories}, truth probability={truth_probability}",
            )
        # epsilon = ln(P(truth) / P(a given other answer)). Recorded as a pure-epsilon event:
        # dp_accounting's RandomizedResponseDpEvent is defined for replace-one neighbours only,
        # while the ledger accounts under add/remove-one.
        # At truth probability 1/k the ratio is 1 (epsilon 0), which rounds to -1e-16 for some k.
        epsilon = max(0.0, math.log(truth_probability * (k - 1) / (1.0 - truth_probability)))
        return cls(
            "randomized_response",
            {"truth_probability": truth_probability, "categories": k, "epsilon": epsilon, **extra},
            EpsilonDeltaDpEvent(epsilon=epsilon, delta=0.0),
        )

    @classmethod
    def exponential(
        cls, epsilon: float, sensitivity: float, *, candidates: int, **extra: Any
    ) -> Mechanism:
        """The exponential mechanism choosing one of ``candidates`` by scores of ``sensitivity``.

        Each candidate is chosen with probability proportional to
        ``exp(epsilon * score / (2 * sensitivity))``; charged as an
        :class:`ExponentialDpEvent` (epsilon-DP, ``epsilon^2 / 8``-zCDP).
        """
        _positive(epsilon=epsilon, sensitivity=sensitivity, candidates=candidates)
        if int(candidates) != candidates:
            raise InvalidInputError(
                "candidates must be a whole number",
                expected="an integer >= 1",
                got=repr(candidates),
            )
        return cls(
            "exponential",
            {
                "epsilon": epsilon,
                "sensitivity": sensitivity,
                "candidates": int(candidates),
                **extra,
            },
            ExponentialDpEvent(epsilon=float(epsilon)),
        )

    @classmethod
    def epsilon_delta(
        cls, name: str, epsilon: float, delta: float = 0.0, **extra: Any
    ) -> Mechanism:
        """A mechanism known only by its (epsilon, delta) guarantee."""
        _positive(epsilon=epsilon)
        if not 0 <= delta < 1:
            raise InvalidInputError(
                "delta out of range", expected="0 <= delta < 1", got=repr(delta)
            )
        return cls(
            name,
            {"epsilon": epsilon, "delta": delta, **extra},
            EpsilonDeltaDpEvent(epsilon=epsilon, delta=delta),
        )


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise InvalidInputError(
                f"mechanism parameter {name} must be a positive finite number",
                expected=f"{name} > 0",
                got=repr(value),
            )


@dataclass(frozen=True)
class PrivacyEvent:
    """One release: what was released and the mechanisms that produced it.

    Attributes:
        what: What was released, in words (the SQL text, "DP-SGD model mnist-cnn", ...).
        mechanisms: Every mechanism that touched the data for this release.
        operation: A short machine-readable kind: ``query``, ``training``,
            ``federated``, ``synthetic``, ``mechanism``.
    """

    what: str
    mechanisms: tuple[Mechanism, ...]
    operation: str = "query"
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.mechanisms:
            raise InvalidInputError(
                "a privacy event needs at least one mechanism", expected=">= 1", got="0"
            )

    @property
    def dp_event(self) -> dp_event.DpEvent:
        """The composition of all mechanisms of this release."""
        if len(self.mechanisms) == 1:
            return self.mechanisms[0].dp_event
        return dp_event.ComposedDpEvent([m.dp_event for m in self.mechanisms])


def flatten(events: Sequence[dp_event.DpEvent]) -> list[tuple[dp_event.DpEvent, int]]:
    """Leaf events with multiplicities, identical leaves merged (so PLD self-composes them once)."""
    counts: dict[dp_event.DpEvent, int] = {}

    def walk(event: dp_event.DpEvent, times: int) -> None:
        if isinstance(event, dp_event.ComposedDpEvent):
            for inner in event.events:
                walk(inner, times)
        elif isinstance(event, dp_event.SelfComposedDpEvent):
            walk(event.event, times * event.count)
        elif isinstance(event, dp_event.NoOpDpEvent):
            return
        else:
            counts[event] = counts.get(event, 0) + times

    for e in events:
        walk(e, 1)
    return list(counts.items())


def validate_event(event: dp_event.DpEvent) -> None:  # noqa: C901, PLR0912 - one branch per event type
    """Refuse an event whose parameters describe no mechanism (the gate checks every charge).

    Hand-built events reach the ledger too (``Ledger.charge`` is public): a Laplace
    scale of -0.5 once composed to epsilon -2.0 and refunded an exhausted budget.
    Every scale must be finite and positive, every probability in range, every
    count a whole number, and a non-private event is recorded as such
    (``record_non_private``), never charged.
    """
    name = type(event).__name__
    if EVENT_TYPES.get(name) is not type(event):
        raise InvalidInputError(
            "this privacy event cannot be charged",
            expected=f"one of {sorted(EVENT_TYPES)}",
            got=name,
        )
    if isinstance(event, dp_event.ComposedDpEvent):
        if not isinstance(event.events, (list, tuple)):
            _bad(name, "events", event.events, "a list of events")
        for inner in event.events:
            validate_event(inner)
    elif isinstance(event, dp_event.SelfComposedDpEvent):
        _whole(name, "count", event.count)
        validate_event(event.event)
    elif isinstance(event, dp_event.PoissonSampledDpEvent):
        _in_range(name, "sampling_probability", event.sampling_probability, 0.0, 1.0, low_open=True)
        validate_event(event.event)
    elif isinstance(event, dp_event.SampledWithoutReplacementDpEvent):
        _whole(name, "source_dataset_size", event.source_dataset_size)
        _whole(name, "sample_size", event.sample_size)
        if event.sample_size > event.source_dataset_size:
            _bad(name, "sample_size", event.sample_size, "at most source_dataset_size")
        validate_event(event.event)
    elif isinstance(event, (dp_event.GaussianDpEvent, dp_event.LaplaceDpEvent)):
        _positive_param(name, "noise_multiplier", event.noise_multiplier)
    elif isinstance(event, dp_event.DiscreteLaplaceDpEvent):
        _positive_param(name, "noise_parameter", event.noise_parameter)
        _whole(name, "sensitivity", event.sensitivity)
    elif isinstance(event, DiscreteGaussianDpEvent):
        _positive_param(name, "sigma", event.sigma)
        _whole(name, "sensitivity", event.sensitivity)
    elif isinstance(event, EpsilonDeltaDpEvent):
        _positive_param(name, "epsilon", event.epsilon, allow_zero=True)
        _in_range(name, "delta", event.delta, 0.0, 1.0, high_open=True)
    elif isinstance(event, ExponentialDpEvent):
        _positive_param(name, "epsilon", event.epsilon)
    elif isinstance(event, dp_event.ZCDpEvent):
        _positive_param(name, "rho", event.rho, allow_zero=True)
        _positive_param(name, "xi", event.xi, allow_zero=True)
    elif isinstance(event, dp_event.NonPrivateDpEvent):
        raise InvalidInputError(
            "a non-private event cannot be charged: it has no finite guarantee",
            expected="a DP mechanism",
            got=name,
            fix="record a use without DP with Ledger.record_non_private (it is not composed)",
        )


def _bad(event: str, name: str, value: object, expected: str) -> None:
    raise InvalidInputError(
        f"{event}: parameter {name} is out of range",
        expected=expected,
        got=repr(value),
        fix="describe the mechanism with the Mechanism constructors (they check their parameters)",
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _positive_param(event: str, name: str, value: object, *, allow_zero: bool = False) -> None:
    number = _number(value)
    if number is None or number < 0 or (number == 0 and not allow_zero):
        _bad(event, name, value, f"a finite number {'>=' if allow_zero else '>'} 0")


def _whole(event: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _bad(event, name, value, "a whole number >= 1")


def _in_range(
    event: str,
    name: str,
    value: object,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    number = _number(value)
    below = number is None or number < low or (low_open and number == low)
    above = number is None or number > high or (high_open and number == high)
    if below or above:
        shown = f"{low:g} {'<' if low_open else '<='} {name} {'<' if high_open else '<='} {high:g}"
        _bad(event, name, value, shown)
