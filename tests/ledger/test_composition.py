"""The incremental composition against the from-scratch one and the batch accountant.

Over random histories of every mechanism the ledger records, composing one
event at a time (:meth:`Composition.add`, and a real :class:`Ledger`'s
charges, checkpoints included) must give exactly what :func:`recompose`
gives, and stay within 0.5 % of :class:`PLDAccountant` (never below it where
the batch accountant uses the same or a finer grid: both are pessimistic
upper bounds, and composing event by event may only round more). A stored
state must come back bit-exactly and go on composing as if never stored.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import veil.ledger._history as history_module
from veil.ledger import (
    Budget,
    Composition,
    Ledger,
    Mechanism,
    PLDAccountant,
    PrivacyEvent,
    recompose,
)
from veil.ledger._events import flatten, validate_event
from veil.store import Store
from veil.store.tables import DatasetRow

# On the same grid the two differ only numerically: the batch accountant self-composes identical
# events (FFT powers) where the fold convolves them one release at a time (directly when small),
# and each composition truncates 1e-15 of tail mass. Seen: 1.3e-9 relative (29 subsampled steps).
_FLOAT_NOISE = 1e-7
_TOLERANCE = 5e-3  # 0.5 %


def _floats(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def _randomized_response(draw: st.DrawFn) -> Mechanism:
    categories = draw(st.integers(2, 10))
    # Just above 1 / k: at exactly 1 / k see test_randomized_response_at_one_over_k_is_chargeable.
    truth = draw(_floats(1.0 / categories * (1 + 1e-9), 0.95))
    return Mechanism.randomized_response(truth_probability=truth, categories=categories)


MECHANISMS = st.one_of(
    st.builds(Mechanism.laplace, scale=_floats(0.2, 20.0), sensitivity=_floats(0.1, 2.0)),
    st.builds(Mechanism.gaussian, sigma=_floats(0.5, 20.0), sensitivity=_floats(0.1, 2.0)),
    st.builds(Mechanism.discrete_laplace, scale=_floats(0.5, 20.0), sensitivity=st.integers(1, 3)),
    st.builds(Mechanism.discrete_gaussian, sigma=_floats(1.0, 20.0), sensitivity=st.integers(1, 3)),
    st.builds(
        Mechanism.subsampled_gaussian,
        sampling_rate=_floats(0.001, 0.1),
        noise_multiplier=_floats(0.6, 3.0),
        steps=st.integers(1, 100),
    ),
    st.builds(
        Mechanism.epsilon_delta,
        name=st.just("exponential"),
        epsilon=_floats(0.05, 3.0),
        delta=st.sampled_from([0.0, 1e-10, 1e-9]),
    ),
    _randomized_response(),
)
# A release is one mechanism or a few together (a query with several noisy aggregates).
RELEASES = st.lists(MECHANISMS, min_size=1, max_size=2).map(
    lambda mechanisms: PrivacyEvent("release", tuple(mechanisms))
)
HISTORIES = st.lists(RELEASES, min_size=1, max_size=30)
DELTAS = st.sampled_from([1e-5, 1e-6, 1e-7])


def _check_against_batch(history: list, delta: float, incremental: float) -> None:
    accountant = PLDAccountant()
    batch = accountant.epsilon(history, delta)
    assert math.isfinite(batch), "the sane ranges compose to a finite epsilon"
    assert incremental == pytest.approx(batch, rel=_TOLERANCE)
    state = recompose(history)
    if accountant.interval_for(flatten(history)) <= state.interval:
        # Same grid (or finer for the batch): the batch answer is the tighter one.
        assert incremental >= batch * (1 - _FLOAT_NOISE), (incremental, batch)


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(history=HISTORIES, delta=DELTAS, extra=RELEASES)
def test_adding_one_event_at_a_time_equals_recomposing(
    history: list[PrivacyEvent], delta: float, extra: PrivacyEvent
) -> None:
    events = [release.dp_event for release in history]
    state = Composition()
    for number, event in enumerate(events, start=1):
        state = state.add(event)
        assert state.events == number
    scratch = recompose(events)
    assert state.epsilon(delta) == scratch.epsilon(delta)
    assert state.epsilon(0.0) == scratch.epsilon(0.0)
    assert state.zcdp_rho() == scratch.zcdp_rho()
    _check_against_batch(events, delta, state.epsilon(delta))

    stored = state.to_bytes()
    restored = Composition.from_bytes(stored)
    assert restored == state or restored.to_bytes() == stored
    assert restored.epsilon(delta) == state.epsilon(delta)
    # Restored, it composes on exactly as the original does.
    after, after_restored = state.add(extra.dp_event), restored.add(extra.dp_event)
    assert after_restored.to_bytes() == after.to_bytes()
    assert after_restored.epsilon(delta) == after.epsilon(delta)
    assert after.epsilon(delta) == recompose([*events, extra.dp_event]).epsilon(delta)


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda data: b"NOTVEIL!" + data[8:], id="magic"),
        pytest.param(lambda data: data[:-8], id="truncated"),
        pytest.param(lambda data: data + b"\0" * 8, id="trailing"),
        pytest.param(lambda data: data[:6], id="header-cut"),
        pytest.param(lambda data: data.replace(b'"format":2', b'"format":9'), id="format"),
    ],
)
def test_a_malformed_state_is_refused(corrupt) -> None:
    state = recompose([Mechanism.gaussian(sigma=3.0, sensitivity=1.0).dp_event] * 3)
    with pytest.raises(ValueError):  # the checkpoint reader treats any of them as unreadable
        Composition.from_bytes(corrupt(state.to_bytes()))


_names = itertools.count()


def _new_dataset(store: Store) -> str:
    """A dataset row of its own for one Hypothesis example (10,000 privacy units)."""
    name = f"prop-{next(_names)}"
    with store.session() as session:
        session.add(
            DatasetRow(
                name=name,
                format="csv",
                source=f"/data/{name}.csv",
                content_sha256=f"{next(_names):064x}",
                size_bytes=1,
                n_rows=10_000,
                n_columns=1,
                privacy_schema={"columns": [{"name": "x", "kind": "numeric"}]},
                load_options={},
                registration_report={"privacy_units": 10_000},
                created_by="pytest",
                veil_version="0",
            )
        )
    return name


@pytest.mark.slow  # 20-40 s: up to 30 charges per example, on each backend
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=HISTORIES, delta=DELTAS, every=st.integers(1, 8))
def test_a_ledger_charges_exactly_the_recomposed_spend(
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    history: list[PrivacyEvent],
    delta: float,
    every: int,
) -> None:
    # Checkpoints every few events, so that a fresh ledger starts from a stored state.
    monkeypatch.setattr(history_module, "CHECKPOINT_EVERY", every)
    name = _new_dataset(store)
    ledger = Ledger(store, key=b"property-test-key")
    ledger.set_budget(name, Budget(epsilon=1e6, delta=delta), reason="property")
    events = [release.dp_event for release in history]
    running = Composition()
    for number, release in enumerate(history, start=1):
        receipt = ledger.charge(name, release, purpose="property")
        running = running.add(release.dp_event)
        assert receipt.seq == number
        assert receipt.status.spent.epsilon == running.epsilon(delta)
    expected = recompose(events).epsilon(delta)
    # Another process: no state in memory, the checkpoint and the events after it.
    fresh = Ledger(store, key=b"property-test-key")
    status = fresh.status(name, cross_check=False)
    assert status.spent.epsilon == expected
    assert status.events == len(history)
    assert ledger.status(name, cross_check=False).spent.epsilon == expected
    _check_against_batch(events, delta, expected)


@pytest.mark.parametrize("categories", [3, 6, 7])
def test_randomized_response_at_one_over_k_is_chargeable(categories: int) -> None:
    # Truth probability 1 / k: every answer equally likely, no information, epsilon 0.
    mechanism = Mechanism.randomized_response(
        truth_probability=1.0 / categories, categories=categories
    )
    validate_event(mechanism.dp_event)
    assert mechanism.parameters["epsilon"] >= 0.0
